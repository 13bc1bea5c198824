"""Event contracts: the registry, the envelope and explicit errors for what cannot be read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.clock import FixedClock
from shared.events import (
    REGISTRY,
    BookingAttended,
    InvalidEvent,
    UnknownEventType,
    new_event,
    parse_event,
)

CLOCK = FixedClock(datetime(2026, 11, 25, 1, 0, tzinfo=UTC))


def test_every_event_name_is_a_past_tense_routing_key() -> None:
    for key, model in REGISTRY.items():
        assert key == model.TYPE
        assert key.count(".") == 1, key
        assert model.__doc__, f"{key} needs a description for the AsyncAPI document"


def test_round_trip_keeps_the_typed_payload() -> None:
    event = new_event(
        BookingAttended(booking_id="b1", how="joined", at=CLOCK.now()),
        office_id="kushiro-gyosei",
        producer="test",
        clock=CLOCK,
    )
    parsed = parse_event(event.to_json())
    assert parsed == event
    assert isinstance(parsed.payload, BookingAttended)
    assert parsed.correlation_id == event.event_id  # a story starts with its first event


def test_a_caused_event_inherits_the_correlation_id() -> None:
    first = new_event(
        BookingAttended(booking_id="b1", how="joined", at=CLOCK.now()),
        office_id="o",
        producer="t",
        clock=CLOCK,
    )
    second = new_event(
        BookingAttended(booking_id="b1", how="contacted", at=CLOCK.now()),
        office_id="o",
        producer="t",
        clock=CLOCK,
        cause=first,
    )
    assert second.correlation_id == first.correlation_id
    assert second.causation_id == first.event_id


def test_times_are_normalised_to_utc() -> None:
    payload = BookingAttended(booking_id="b", how="joined", at="2026-11-25T10:00:00+09:00")  # type: ignore[arg-type]
    assert payload.at == datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert payload.at.utcoffset() is not None


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe", b"not json", b"[]", b'{"no": "type"}'],
)
def test_unreadable_messages_raise_invalid_event(body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parse_event(body)


def test_unknown_type_is_an_explicit_error() -> None:
    with pytest.raises(UnknownEventType):
        parse_event(json.dumps({"type": "booking.exploded"}))


def test_invalid_payload_names_the_field() -> None:
    event = new_event(
        BookingAttended(booking_id="b1", how="joined", at=CLOCK.now()),
        office_id="o",
        producer="t",
        clock=CLOCK,
    )
    data = json.loads(event.to_json())
    data["payload"]["how"] = "teleported"
    with pytest.raises(InvalidEvent, match=r"payload\.how"):
        parse_event(data)


def test_asyncapi_document_describes_every_event_with_its_schema() -> None:
    from shared.asyncapi import asyncapi

    doc = asyncapi()
    schemas = doc["components"]["schemas"]
    addresses = {c["address"] for c in doc["channels"].values()}
    for key, model in REGISTRY.items():
        assert key in addresses, f"{key} missing from the AsyncAPI channels"
        assert f"Envelope[{model.__name__}]" in schemas
    assert "R12" in doc["info"]["description"]
