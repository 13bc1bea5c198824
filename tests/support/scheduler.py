"""Helpers of the scheduler's integration tests: settings, a probe queue, events as booking sends them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from services.scheduler.config import Settings
from shared import topology
from shared.clock import JST, Clock
from shared.events import (
    AlternativeAccepted,
    AlternativeDeclined,
    BookingAttended,
    BookingCancelled,
    BookingRequested,
    Envelope,
    Payload,
    Recipient,
    TimeWindow,
    new_event,
    parse_event,
)
from tests.support import GRAPH_URL, eventually, flush, sentinel_of

ROOT = Path(__file__).resolve().parents[2]
DEMO_OFFICES = ROOT / "deploy" / "offices-demo"
#: the development key (STAFF_API_KEY: every office), registered at start-up by the test services
STAFF_KEY = "dev-staff-key"
STAFF = {"X-Staff-Key": STAFF_KEY}
KG, HW, DEMO = "kushiro-gyosei", "kohoku-hellowork", "demo-town"
WEEKDAYS_9_TO_5 = {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


def jst(*args: int) -> datetime:
    return datetime(*args, tzinfo=JST)  # type: ignore[misc]


def scheduler_settings(make_settings: Callable[..., Any], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "extra_offices_dir": DEMO_OFFICES,
        "timer_poll_seconds": 0.05,
        "replica_id": f"test-{uuid.uuid4().hex[:6]}",
        "staff_api_key": STAFF_KEY,
    }
    return make_settings(Settings, **(values | overrides))  # type: ignore[no-any-return]


@dataclass
class Probe:
    """A queue bound to the events exchange: what the scheduler really published."""

    events: list[Envelope[Any]] = field(default_factory=list)
    repeats: int = 0  # deliveries of an event id already seen (the outbox relay is at-least-once)
    _ids: set[Any] = field(default_factory=set)
    sentinels: set[str] = field(default_factory=set)
    channel: aio_pika.abc.AbstractChannel | None = None
    queue: str = ""

    async def flush(self) -> None:
        """Everything confirmed into the probe's queue before this call has been seen."""
        assert self.channel is not None
        await flush(self.channel, self.queue, self.sentinels)

    def add(self, event: Envelope[Any]) -> None:
        """Like every consumer, count an event id once."""
        if event.event_id in self._ids:
            self.repeats += 1
            return
        self._ids.add(event.event_id)
        self.events.append(event)

    def of(self, type_: str, booking_id: str | None = None) -> list[Envelope[Any]]:
        return [
            e
            for e in self.events
            if e.type == type_ and (booking_id is None or e.payload.booking_id == booking_id)
        ]

    async def wait(
        self, type_: str, booking_id: str | None = None, n: int = 1, timeout: float = 10.0
    ) -> list[Any]:
        async def enough() -> list[Envelope[Any]]:
            found = self.of(type_, booking_id)
            return found if len(found) >= n else []

        return await eventually(enough, timeout=timeout, what=f"{n} x {type_} for {booking_id}")


@asynccontextmanager
async def probe(amqp_url: str, *keys: str) -> AsyncIterator[Probe]:
    conn = await aio_pika.connect(amqp_url)
    seen = Probe()
    async with conn:
        ch = await conn.channel()
        await topology.declare_exchanges(ch)
        queue = await ch.declare_queue(f"probe-{uuid.uuid4().hex[:8]}", exclusive=True)
        for key in keys or ("appointment.#", "access.logged"):
            await queue.bind(topology.EVENTS, routing_key=key)
        seen.channel, seen.queue = ch, queue.name

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with msg.process():
                if (token := sentinel_of(msg)) is not None:
                    seen.sentinels.add(token)
                else:
                    seen.add(parse_event(msg.body))

        await queue.consume(on_message)
        yield seen


class Booking:
    """Sends what the booking service would send, on the events exchange."""

    def __init__(self, amqp_url: str, clock: Clock) -> None:
        self.amqp_url, self.clock = amqp_url, clock
        self.sent = 0  # events sent to the scheduler

    def event(self, payload: Payload, office_id: str) -> Envelope[Any]:
        return new_event(payload, office_id=office_id, producer="booking", clock=self.clock)

    async def send(self, *events: Envelope[Any]) -> None:
        conn = await aio_pika.connect(self.amqp_url)
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            ex = await ch.get_exchange(topology.EVENTS)
            for e in events:
                await ex.publish(aio_pika.Message(e.to_json(), delivery_mode=2), routing_key=e.type)
                self.sent += 1

    def requested(
        self,
        office_id: str,
        windows: list[tuple[datetime, datetime]],
        *,
        minutes: int = 30,
        area: str | None = None,
        booking_id: str | None = None,
    ) -> Envelope[Any]:
        payload = BookingRequested(
            booking_id=booking_id or uuid.uuid4().hex,
            windows=[TimeWindow(start=s, end=e) for s, e in windows],
            duration_minutes=minutes,
            area=area,
        )
        return self.event(payload, office_id)

    def accepted(self, office_id: str, booking_id: str, option_id: str) -> Envelope[Any]:
        return self.event(AlternativeAccepted(booking_id=booking_id, option_id=option_id), office_id)

    def declined(self, office_id: str, booking_id: str) -> Envelope[Any]:
        return self.event(AlternativeDeclined(booking_id=booking_id), office_id)

    def attended(self, office_id: str, booking_id: str) -> Envelope[Any]:
        return self.event(
            BookingAttended(booking_id=booking_id, how="joined", at=self.clock.now()), office_id
        )

    def cancelled(self, office_id: str, booking_id: str, reason: str = "person") -> Envelope[Any]:
        payload = BookingCancelled(
            booking_id=booking_id,
            reason=reason,  # type: ignore[arg-type]
            channel="phone",
            recipient=Recipient(name="x", email="x@example.org"),
            terms_version="t",
        )
        return self.event(payload, office_id)


DEFAULT_APP = {KG: "teams", HW: "teleoffice", DEMO: "teams"}
GRAPH_APPS = {(KG, "teams"), (DEMO, "teams")}  # R16: the offices whose Teams meetings Graph creates


async def put_counsellor(
    client: httpx.AsyncClient,
    office_id: str,
    cid: str,
    *,
    areas: list[str] | None = None,
    room: bool = True,
    **body: Any,
) -> None:
    """A counsellor with a work email and what their app needs (R16): a Teams organiser where Graph
    creates the meetings, else one pre-issued development room (unless `room=False`)."""
    app = (body.get("apps") or [DEFAULT_APP[office_id]])[0]
    mail = f"{cid}@{office_id}.example.org"
    extra = {"organizer": mail} if (office_id, app) in GRAPH_APPS else {}
    body = {"name": cid, "areas": areas or [], "weekly": WEEKDAYS_9_TO_5, "email": mail} | extra | body
    base = f"/v1/staff/offices/{office_id}/counsellors/{cid}"
    r = await client.put(base, json=body, headers=STAFF)
    assert r.status_code in (200, 201), r.text
    if room and (office_id, app) not in GRAPH_APPS:
        await put_room(client, office_id, cid, f"{cid}-1", app)


async def put_room(client: httpx.AsyncClient, office_id: str, cid: str, room_id: str, app: str) -> str:
    """A pre-issued development room (the contract server's page); its join URL."""
    url = f"{GRAPH_URL}/rooms/{app}/{office_id}/{room_id}"
    body = {"app": app, "join_url": url, "meeting_id": "123 456 789", "passcode": "pass1"}
    r = await client.put(
        f"/v1/staff/offices/{office_id}/counsellors/{cid}/rooms/{room_id}", json=body, headers=STAFF
    )
    assert r.status_code in (200, 201), r.text
    return url


async def request_doc(client: httpx.AsyncClient, booking_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/staff/requests/{booking_id}", headers=STAFF)
    return r.json() if r.status_code == 200 else {}
