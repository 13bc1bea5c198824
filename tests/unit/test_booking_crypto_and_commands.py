"""R12 field encryption and keyed hashes; the intake message schema and its parser."""

from __future__ import annotations

import base64
import json
import os
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from pydantic import ValidationError

from services.booking.crypto import Vault, VaultError
from services.booking.handlers import parse_message
from shared.commands import BookingForm, RequestBooking, booking_id_for, form_errors
from shared.events import InvalidEvent, MessageError
from shared.topology import EVENTS, INTAKE


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_r12_a_sealed_field_opens_only_in_its_own_context() -> None:
    vault = Vault.from_secret("s3cret")
    token = vault.seal("090-1234-5678", "booking:b1:phone")
    assert "090" not in token and token.startswith("s1:")
    assert vault.open(token, "booking:b1:phone") == "090-1234-5678"
    assert vault.seal("x", "c") != vault.seal("x", "c")  # a fresh nonce every time
    with pytest.raises(InvalidTag):
        vault.open(token, "booking:b2:phone")  # copied to another booking
    with pytest.raises(InvalidTag):
        Vault.from_secret("another secret").open(token, "booking:b1:phone")


def test_r12_keys_rotate_by_id() -> None:
    k1, k2 = key(), key()
    old = Vault.from_secret("s", {"k1": k1}, "k1")
    token = old.seal("釧路 太郎", "ctx")
    new = Vault.from_secret("s", {"k1": k1, "k2": k2}, "k2")
    assert new.open(token, "ctx") == "釧路 太郎" and new.stale(token)
    assert new.seal("x", "ctx").startswith("k2:")
    with pytest.raises(VaultError, match="no key 'k1'"):
        Vault.from_secret("s", {"k2": k2}, "k2").open(token, "ctx")
    with pytest.raises(VaultError):
        Vault.from_secret("s", {"k1": base64.b64encode(b"short").decode()}, "k1")


def test_r12_lookup_hashes_and_person_keys_are_keyed() -> None:
    a, b = Vault.from_secret("one"), Vault.from_secret("two")
    assert a.index("phone", "+81154221234") == a.index("phone", "+81154221234")
    assert a.index("phone", "+81154221234") != b.index("phone", "+81154221234")
    assert a.index("phone", "x") != a.index("email", "x")
    ident = [("phone", "+81154221234"), ("email", "t@example.jp")]
    assert a.person_key("kushiro-gyosei", ident) != a.person_key("demo-town", ident)  # per office
    assert "8115" not in a.person_key("kushiro-gyosei", ident)


def command(**over: object) -> dict[str, object]:
    return {
        "message_id": str(uuid.uuid4()),
        "type": "booking.request",
        "office_id": "kushiro-gyosei",
        "sent_at": "2026-11-22T10:00:00+09:00",
        "portal_id": "p1",
        "idempotency_key": "k1",
        "body": {"windows": []},
        **over,
    }


def test_intake_commands_become_envelopes_the_consumer_dedupes() -> None:
    data = command()
    envelope = parse_message(json.dumps(data).encode(), INTAKE)
    assert envelope.type == "booking.request" and str(envelope.event_id) == data["message_id"]
    assert isinstance(envelope.payload, RequestBooking) and envelope.producer == "portal:p1"
    assert booking_id_for("p1", "k1") == booking_id_for("p1", "k1") != booking_id_for("p2", "k1")


def test_unreadable_and_forged_intake_messages_are_refused_with_a_reason() -> None:
    with pytest.raises(InvalidEvent):
        parse_message(b"\xff not json", INTAKE)
    with pytest.raises(MessageError) as bad:
        parse_message(json.dumps(command(idempotency_key="")).encode(), INTAKE)
    assert bad.value.reason == "invalid-command"
    forged = {"type": "appointment.no_show", "payload": {}}
    with pytest.raises(MessageError) as exc:
        parse_message(json.dumps(forged).encode(), INTAKE)
    assert exc.value.reason == "not-an-intake-message"
    with pytest.raises(MessageError) as exc:  # from the events exchange it is judged as an event
        parse_message(json.dumps(forged).encode(), EVENTS)
    assert exc.value.reason == "invalid-event"


def test_r02_a_body_that_is_not_an_object_is_a_field_error_of_the_body() -> None:
    with pytest.raises(ValidationError) as exc:
        BookingForm.model_validate([1, 2, 3])
    [error] = form_errors(exc.value)
    assert (error.field, error.rule) == ("body", "R02")
