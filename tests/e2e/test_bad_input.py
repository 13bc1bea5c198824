"""Bad input at the edges (issue 7): refused with a reason, or parked with the reason; nothing stops.

HTTP (booking's portal API): malformed JSON, wrong schema, a 10 MB body, invalid UTF-8, over-long
fields and control characters each get a 4xx whose JSON body names the problem. AMQP (consult.intake
and consult.events): an unreadable body, an envelope of the wrong shape and an unknown event type are
parked in the consuming service's parking queue with `x-park-reason` (read back through the
management API with ackmode ack_requeue_true, so the messages stay). Afterwards every service's
/readyz is 200 and a good booking still flows to confirmed.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aio_pika
import httpx
import pytest

from examples import forms
from shared import topology
from shared.calendar import OfficeCalendar
from shared.clock import SystemClock
from shared.settings import ServiceSettings
from tests import support
from tests.support.stack import PORTAL_KEY, ROOT, SERVICES, Stack, parked_body

PORTAL = {"Authorization": f"Bearer {PORTAL_KEY}"}
OFFICE = "kushiro-gyosei"
URL = f"/v1/offices/{OFFICE}/bookings"


def good_form(**fields: Any) -> dict[str, Any]:
    policy = ServiceSettings(extra_offices_dir=ROOT / "deploy" / "offices-demo").policies()[OFFICE]
    now = SystemClock().now()
    day = OfficeCalendar(policy).first_bookable(now + timedelta(days=21))
    return forms.kg_form(policy, day, now, window=("09:00", "17:00"), **fields)


async def post_raw(stack: Stack, content: bytes, content_type: str = "application/json") -> httpx.Response:
    headers = PORTAL | {"Content-Type": content_type, "Idempotency-Key": uuid.uuid4().hex}
    async with stack.client("booking") as c:
        return await c.post(URL, content=content, headers=headers)


def assert_refused(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    body = r.json()
    assert isinstance(body, dict) and (body.get("message") or body.get("errors") or body.get("detail")), body
    return dict(body)


def fields_named(body: dict[str, Any]) -> set[str]:
    return {str(e.get("field", "")).split(".")[0] for e in body.get("errors", [])}


# ----------------------------------------------------------------- HTTP


async def test_malformed_json_is_refused_with_a_reason(stack: Stack) -> None:
    body = assert_refused(await post_raw(stack, b'{"name": "Kushiro Taro", '), 400, 422)
    assert "json" in json.dumps(body).lower()


async def test_wrong_schema_names_the_fields(stack: Stack) -> None:
    form = good_form(windows="tomorrow morning", duration_minutes="thirty")
    body = assert_refused(await post_raw(stack, json.dumps(form).encode()), 422)
    assert {"windows", "duration_minutes"} <= fields_named(body), body
    body = assert_refused(await post_raw(stack, b"[1, 2, 3]"), 422)


async def test_a_10_mb_body_is_refused_before_it_is_read(stack: Stack) -> None:
    big = json.dumps(good_form(topic="x" * (10 * 1024 * 1024))).encode()
    body = assert_refused(await post_raw(stack, big), 413)
    assert "exceeds" in body["message"]


async def test_invalid_utf8_is_refused_with_a_reason(stack: Stack) -> None:
    raw = json.dumps(good_form(name="NAME")).encode().replace(b"NAME", b"\xff\xfe\xc3(")
    assert_refused(await post_raw(stack, raw), 400, 422)


async def test_over_long_fields_are_named(stack: Stack) -> None:
    form = good_form(name="太" * 5000, address="北海道釧路市" + "幸" * 5000)
    body = assert_refused(await post_raw(stack, json.dumps(form).encode()), 422)
    assert {"name", "address"} <= fields_named(body), body
    async with stack.client("booking") as c:  # an over-long Idempotency-Key header too
        r = await c.post(URL, json=good_form(), headers=PORTAL | {"Idempotency-Key": "k" * 500})
    assert_refused(r, 400, 422)


async def test_control_characters_in_the_name_are_refused(stack: Stack) -> None:
    form = good_form(name="釧路\x00太郎\x07")
    body = assert_refused(await post_raw(stack, json.dumps(form).encode()), 422)
    assert "name" in fields_named(body), body


async def test_control_characters_in_the_address_are_refused(stack: Stack) -> None:
    form = good_form(address="北海道釧路市\x00幸町\x1b[2J10-3\x07")
    body = assert_refused(await post_raw(stack, json.dumps(form).encode()), 422)
    assert "address" in fields_named(body), body


# ----------------------------------------------------------------- AMQP


async def publish(stack: Stack, exchange: str, routing_key: str, body: bytes, message_id: str) -> None:
    if exchange == topology.INTAKE:  # as the portal's own broker user, as a portal does
        await support.publish_as_portal(stack.amqp_url, body, routing_key, message_id=message_id)
        return
    connection = await aio_pika.connect(stack.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        ex = await channel.get_exchange(exchange)
        msg = aio_pika.Message(body, content_type="application/json", message_id=message_id)
        await ex.publish(msg, routing_key=routing_key, mandatory=True)


def _body(queue: str, message: dict[str, Any]) -> bytes:
    """The parked body, opened with the parking service's key (R12: parked copies rest sealed)."""
    return parked_body(queue, message)


async def parked_reason(stack: Stack, queue: str, message_id: str) -> str:
    """x-park-reason of our message in a parking queue, read without consuming it.

    Found by the marker in its body: the parked copy keeps body and headers, not the message_id."""
    vhost = quote(stack.amqp_url.rsplit("/", 1)[1], safe="")
    get = {"count": 1000, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 1_000_000}

    async def probe() -> str:
        async with httpx.AsyncClient(timeout=30) as c:
            r = await c.post(f"{support.RABBITMQ_API}/queues/{vhost}/{queue}/get", json=get)
            r.raise_for_status()
        for m in r.json():
            if message_id.encode() in _body(queue, m):
                return str(m["properties"]["headers"][topology.REASON_HEADER])
        return ""

    return await support.eventually(probe, timeout=30, interval=0.5, what=f"{message_id} in {queue}")


INTAKE_CASES = {  # MARK is replaced by a unique marker, to find the message in the parking queue
    "not-json": b'{"type": "booking.request", "m": "MARK", ',
    "invalid-utf8": b'{"type": "booking.request", "x": "\xff\xfe", "m": "MARK"}',
    "not-an-object": b'[1, 2, "MARK"]',
    "wrong-schema": json.dumps({"type": "booking.request", "message_id": "MARK", "body": 3}).encode(),
    "unknown-type": json.dumps({"type": "booking.teleport", "message_id": "MARK"}).encode(),
}


@pytest.mark.parametrize("case", sorted(INTAKE_CASES))
async def test_bad_intake_message_is_parked_with_a_reason(stack: Stack, case: str) -> None:
    message_id = f"bad-{case}-{uuid.uuid4().hex[:8]}"
    body = INTAKE_CASES[case].replace(b"MARK", message_id.encode())
    await publish(stack, topology.INTAKE, "booking.request", body, message_id)
    reason = await parked_reason(stack, "booking.parking", message_id)
    assert reason, "parked without a reason"
    print(f"\nbad input: intake {case} parked with {reason}")


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("unknown-type", json.dumps({"type": "booking.teleported", "event_id": "MARK"}).encode()),
        ("not-json", b"\xff\xfe{{{MARK"),
        ("wrong-schema", json.dumps({"type": "booking.requested", "payload": {"x": "MARK"}}).encode()),
    ],
)
async def test_bad_event_is_parked_by_audit_with_a_reason(stack: Stack, case: str, body: bytes) -> None:
    """Audit binds `#`: every event reaches it; a bad one is parked there, named."""
    message_id = f"bad-{case}-{uuid.uuid4().hex[:8]}"
    key = "booking.teleported" if case == "unknown-type" else "x.y"
    await publish(stack, topology.EVENTS, key, body.replace(b"MARK", message_id.encode()), message_id)
    reason = await parked_reason(stack, "audit.parking", message_id)
    expected = "unknown-event-type" if case == "unknown-type" else "invalid-event"
    assert reason == expected, reason


async def test_after_bad_input_every_service_is_ready_and_a_good_booking_flows(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as c:
        for service in SERVICES:
            assert (await c.get(f"{stack.urls[service]}/readyz")).status_code == 200, service
    r = await post_raw(stack, json.dumps(good_form()).encode())
    assert r.status_code == 202, r.text
    booking_id = r.json()["booking_id"]
    async with stack.client("booking", headers=PORTAL) as c:

        async def confirmed() -> bool:
            return bool((await c.get(f"/v1/bookings/{booking_id}")).json()["status"] == "confirmed")

        await support.eventually(confirmed, timeout=60, interval=0.5, what="the good booking confirmed")


async def test_a_parked_message_keeps_its_message_id(stack: Stack) -> None:
    message_id = f"bad-keep-id-{uuid.uuid4().hex[:8]}"
    await publish(stack, topology.INTAKE, "booking.request", f"not json {message_id}".encode(), message_id)
    await parked_reason(stack, "booking.parking", message_id)
    vhost = quote(stack.amqp_url.rsplit("/", 1)[1], safe="")
    get = {"count": 1000, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 1_000_000}
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{support.RABBITMQ_API}/queues/{vhost}/booking.parking/get", json=get)
    [mine] = [m for m in r.json() if message_id.encode() in _body("booking.parking", m)]
    assert mine["properties"].get("message_id") == message_id
