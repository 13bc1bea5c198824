"""Hostile input at the booking intake (issue 14), on the real RabbitMQ and FerretDB: each is refused
with a reason (HTTP 422 naming the field) or parked at once with its reason (AMQP), never a 500, never
a consumer crash, never a retry loop, never silently dropped."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Any

import httpx
import pytest

from examples import forms
from shared import topology
from shared.commands import booking_id_for
from tests.support import eventually
from tests.support.booking import KG, PORTAL_KEY, STAFF_KEY, Harness, parked, running

TUE = date(2026, 11, 24)
URL = f"/v1/offices/{KG}/bookings"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def h(make_settings: Callable[..., Any], amqp_url: str) -> AsyncIterator[Harness]:
    async with running(make_settings, amqp_url) as harness:
        yield harness


def kg(h: Harness, **fields: Any) -> dict[str, Any]:
    return forms.kg_form(h.policy(KG), TUE, h.now, **fields)


async def post(h: Harness, raw: bytes, token: str = PORTAL_KEY, url: str = URL) -> httpx.Response:
    headers = JSON | {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
    return await h.client.post(url, content=raw, headers=headers)


def errors_of(r: httpx.Response) -> dict[str, str]:
    """field -> message of a 422, in the intake's format or FastAPI's."""
    assert r.status_code == 422, (r.status_code, r.text[:300])
    body = r.json()
    if "errors" in body:
        return {e["field"]: e["message"] for e in body["errors"]}
    return {".".join(str(p) for p in e["loc"][1:]) or "body": e["msg"] for e in body["detail"]}


def consumer_stats(h: Harness) -> dict[str, int]:
    return h.runtime.consumer.stats


# ----------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize(
    "raw",
    [b"[" * 50_000, b'{"a":' * 30_000, b'{"name": ' + b"[" * 33 + b"]" * 33 + b"}"],
    ids=["arrays-50000", "objects-30000", "arrays-33"],
)
async def test_r02_deeply_nested_json_is_a_422_with_the_reason(h: Harness, raw: bytes) -> None:
    assert errors_of(await post(h, raw)) == {"body": "nested deeper than 32 levels"}


async def test_r02_lone_surrogates_are_a_422_naming_the_field(h: Harness) -> None:
    """Was a UnicodeEncodeError (500) while hashing the body for the idempotency key."""
    cases = {
        ("name", "D800"): {"name": "\ud800"},
        ("address", "DFFF"): {"address": "北海道釧路市幸町10-3\udfff"},
        ("\\ud83d", "D83D"): {"\ud83d": "x"},
        ("windows.0.start", "DC00"): {
            "windows": [{"start": "\udc00\ud800", "end": "2026-11-24T12:00:00+09:00"}]
        },
    }
    for (field, point), fields in cases.items():
        raw = json.dumps(kg(h, **fields)).encode()  # ensure_ascii: the surrogate travels as \ud800
        assert errors_of(await post(h, raw)) == {field: f"a lone surrogate U+{point} is not a character"}


async def test_r07_a_cancellation_with_a_lone_surrogate_or_deep_nesting_is_a_422(h: Harness) -> None:
    """Was a 500: FastAPI's 422 echoed the surrogate, which the JSON answer could not encode."""
    booking_id = (await h.book(KG, kg(h))).json()["booking_id"]
    url = f"/v1/bookings/{booking_id}/cancellations"
    bad = json.dumps({"channel": "phone", "by": "person", "recorded_by": "\ud800"}).encode()
    assert errors_of(await post(h, bad, STAFF_KEY, url)) == {
        "recorded_by": "a lone surrogate U+D800 is not a character"
    }
    assert errors_of(await post(h, b"[" * 50_000, STAFF_KEY, url)) == {"body": "nested deeper than 32 levels"}
    escape = json.dumps({"channel": "phone", "by": "person", "recorded_by": "desk\x1b[2J"}).encode()
    assert "recorded_by" in errors_of(await post(h, escape, STAFF_KEY, url))
    assert (await h.get(booking_id))["status"] == "requested"


async def test_r10_device_fields_meet_the_text_rules_and_the_ip_is_an_ip(h: Harness) -> None:
    device = {
        "device_id": "dev\r\nX-Injected: 1",
        "user_agent": "Mozilla\x00\x1b[31m\u202etxt.exe",
        "ip_address": "not-an-ip",
    }
    errors = errors_of(await post(h, json.dumps(kg(h, device=device)).encode()))
    assert errors == {
        "device.device_id": "control character U+000D is not allowed",
        "device.user_agent": "control character U+0000 is not allowed",
        "device.ip_address": "not an IP address",
    }
    bidi = errors_of(
        await post(h, json.dumps(kg(h, device={"user_agent": "Mozilla \u202egpj.exe"})).encode())
    )
    assert bidi == {"device.user_agent": "control character U+202E is not allowed"}
    r = await h.book(KG, kg(h, device={"ip_address": "2001:DB8:0:0::1", "user_agent": "Mozilla/5.0"}))
    assert r.status_code == 202, r.text
    [recorded] = await h.events.wait("device.recorded", booking_id=r.json()["booking_id"])
    assert recorded["payload"]["ip_address"] == "2001:db8::1"  # one address, one pseudonym in audit


async def test_r02_duplicate_keys_and_out_of_range_numbers_are_refused(h: Harness) -> None:
    body = json.dumps(kg(h))
    duplicate = body[:-1] + ', "name": "別人"}'
    assert errors_of(await post(h, duplicate.encode())) == {
        "name": "the same key appears twice in one object"
    }
    for number in ("1e400", "1" + "0" * 30, "NaN"):
        raw = body.replace('"duration_minutes": 30', f'"duration_minutes": {number}').encode()
        assert "body" in errors_of(await post(h, raw)), number


async def test_r02_an_idempotency_key_with_control_characters_is_a_422(h: Harness) -> None:
    headers = {"Authorization": f"Bearer {PORTAL_KEY}", "Idempotency-Key": "k\x85\x9b31m".encode("latin-1")}
    r = await h.client.post(URL, json=kg(h), headers=headers)
    assert errors_of(r) == {"Idempotency-Key": "control characters are not allowed"}


async def test_r10_an_office_or_request_id_with_control_characters_is_a_404_and_still_access_logged(
    h: Harness,
) -> None:
    """Found by the OpenAPI fuzzer: an unknown office (U+0094 in the path) went into the rejection
    event and the access record, which the text rules refuse: a 500, and no access record (R10)."""
    headers = {"Authorization": f"Bearer {PORTAL_KEY}", "X-Request-Id": b"req\x85\x1b[2J"}
    r = await h.client.post("/v1/offices/%C2%94kg/bookings", json=kg(h), headers=headers)
    assert r.status_code == 404, r.text
    [logged] = await h.events.wait("access.logged", route="/v1/offices/{office_id}/bookings")
    assert logged["office_id"] == "\\x94kg"
    assert logged["payload"]["request_id"].isalnum()  # not echoed: one of ours
    assert not h.events.of("booking.rejected")


# ----------------------------------------------------------------------------- AMQP


async def wait_parked(h: Harness, n: int) -> list[Any]:
    await eventually(lambda: _at_least(consumer_stats(h)["parked"], n), what=f"{n} parked")
    return await parked(h.amqp_url)


async def _at_least(value: int, n: int) -> bool:
    return value >= n


async def test_amqp_deeply_nested_or_surrogate_commands_are_parked_at_once_with_the_reason(
    h: Harness,
) -> None:
    """Were: a consumer crash per delivery until the broker's delivery_limit (x-death only), and
    36 s of retries before `retries-exhausted` for lone surrogates."""
    deep = b'{"type": "booking.request", "body": ' + b"[" * 50_000
    cmd = forms.booking_command("dev-portal", KG, "amqp-sur", kg(h, name="\ud800"), sent_at=h.now)
    await h.publish(deep, "booking.request")
    await h.publish(json.dumps(cmd).encode(), "booking.request")
    messages = await wait_parked(h, 2)
    details = sorted(
        (str(m.headers[topology.REASON_HEADER]), str(m.headers[topology.DETAIL_HEADER])) for m in messages
    )
    assert details == [
        ("invalid-event", "body.name: a lone surrogate U+D800 is not a character"),
        ("invalid-event", "body: nested deeper than 32 levels"),
    ]
    assert all(topology.ATTEMPT_HEADER not in m.headers for m in messages)  # no retry before parking
    assert consumer_stats(h)["retried"] == 0


async def test_amqp_device_report_with_hostile_fields_is_parked_with_the_field(h: Harness) -> None:
    observe = {
        "message_id": str(uuid.uuid4()),
        "type": "device.observed",
        "office_id": KG,
        "sent_at": h.now.isoformat(),
        "portal_id": "dev-portal",
        "device_id": "a\nb",
        "ip_address": "999.1.1.1",
    }
    await h.publish(observe, "device.observed")
    [message] = await wait_parked(h, 1)
    assert message.headers[topology.REASON_HEADER] == "invalid-command"
    detail = str(message.headers[topology.DETAIL_HEADER])
    assert "device_id" in detail and "ip_address" in detail, detail


async def test_amqp_a_command_reusing_another_commands_message_id_is_rejected_not_swallowed(
    h: Harness,
) -> None:
    """Was: dropped by dedupe as a duplicate, with no trace (404 on its request). A redelivered copy
    (same id, same content) is still handled once."""
    first = forms.booking_command("dev-portal", KG, "reuse-a", kg(h), sent_at=h.now)
    await h.publish(first, "booking.request")
    await h.events.wait("booking.requested", booking_id=booking_id_for("dev-portal", "reuse-a"))
    await h.publish(first, "booking.request")  # a copy: a duplicate, acknowledged
    await eventually(lambda: _at_least(consumer_stats(h)["duplicates"], 1), what="the copy deduped")

    second = forms.booking_command("dev-portal", KG, "reuse-b", kg(h), sent_at=h.now)
    second["message_id"] = first["message_id"]
    await h.publish(second, "booking.request")
    [rejected] = await h.events.wait("booking.rejected", request_id="reuse-b")
    assert first["message_id"] in rejected["payload"]["message"]
    [message] = await wait_parked(h, 1)
    assert message.headers[topology.REASON_HEADER] == "message-id-reused"
    assert (
        json.loads(h.runtime.consumer.open_copy(message.body, message.headers))["idempotency_key"]
        == "reuse-b"
    )
    assert not h.events.of("booking.requested", booking_id=booking_id_for("dev-portal", "reuse-b"))
