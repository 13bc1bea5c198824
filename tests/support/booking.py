"""Helpers for the booking tests: the service in-process with a fixed clock, a tap on the events
exchange, publishing to the intake exchange as a portal or the job-seeker system would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import aio_pika
import httpx

from services.booking.app import create_app
from services.booking.config import Settings
from shared import topology
from shared.clock import JST, FixedClock
from shared.policy import OfficePolicy, TermsVersion
from shared.runtime import Runtime
from tests import support
from tests.support import eventually, serve

#: "today is 2026-11-22 (Sunday)"; 10:00 JST
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=JST)
PORTAL_KEY = "cpk_test-portal-key-0123456789abcdefghijklmnopqrstuv"
STAFF_KEY = "csk_test-staff-key-0123456789abcdefghijklmnopqrstuvw"
KG, HW = "kushiro-gyosei", "kohoku-hellowork"


@dataclass
class Tap:
    """Every event on consult.events, as JSON dicts, in arrival order."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    sentinels: set[str] = field(default_factory=set)
    channel: aio_pika.abc.AbstractChannel | None = None
    queue: str = ""

    async def flush(self) -> None:
        """Everything published to consult.events before this call has been seen."""
        assert self.channel is not None
        await support.flush(self.channel, self.queue, self.sentinels)

    def of(self, type_: str, **payload: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.seen
            if e["type"] == type_ and all(e["payload"].get(k) == v for k, v in payload.items())
        ]

    async def wait(
        self, type_: str, n: int = 1, timeout: float = 10.0, **payload: Any
    ) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]]:
            found = self.of(type_, **payload)
            return found if len(found) >= n else []

        return await eventually(enough, timeout=timeout, what=f"{n}× {type_} {payload}")


@asynccontextmanager
async def tap(amqp_url: str) -> AsyncIterator[Tap]:
    t = Tap()
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        ch = await conn.channel()
        await topology.declare_exchanges(ch)
        q = await ch.declare_queue(exclusive=True, auto_delete=True)
        await q.bind(topology.EVENTS, routing_key="#")
        t.channel, t.queue = ch, q.name

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with msg.process():
                if (token := support.sentinel_of(msg)) is not None:
                    t.sentinels.add(token)
                else:
                    t.seen.append(json.loads(msg.body))

        await q.consume(on_message)
        yield t


async def publish(
    amqp_url: str,
    body: dict[str, Any] | bytes,
    routing_key: str,
    exchange: str = topology.INTAKE,
    *,
    portal: str | None = None,
) -> None:
    """To consult.intake as the portal the command names (`portal`: as another, or the dev portal
    for a body that names none); to any other exchange as the vhost's user."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if exchange == topology.INTAKE:
        named = body.get("portal_id") if isinstance(body, dict) else None
        sender = portal or (named if isinstance(named, str) and named else "dev-portal")
        message_id = body.get("message_id") if isinstance(body, dict) else None
        await support.publish_as_portal(amqp_url, raw, routing_key, sender, message_id=message_id)
        return
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange(exchange)
        await ex.publish(
            aio_pika.Message(raw, delivery_mode=2, content_type="application/json"),
            routing_key=routing_key,
            mandatory=True,
        )


async def parked(amqp_url: str, queue: str = "booking.parking") -> list[aio_pika.abc.AbstractIncomingMessage]:
    out = []
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        ch = await conn.channel()
        q = await ch.get_queue(queue)
        while (m := await q.get(fail=False)) is not None:
            out.append(m)
            await m.ack()
    return out


@dataclass
class Harness:
    client: httpx.AsyncClient
    clock: FixedClock
    settings: Settings
    amqp_url: str
    events: Tap
    runtime: Runtime
    published: int = 0  # messages this test sent the service over AMQP

    async def quiet(self) -> None:
        """Negative checks: the service has settled every message the test sent it, published
        everything that caused, and the tap has seen all of it."""
        await support.quiet(self.runtime, settled=self.published)
        await self.events.flush()

    def policy(self, office_id: str) -> OfficePolicy:
        return self.settings.policies()[office_id]

    @property
    def now(self) -> datetime:
        return self.clock.now()

    async def book(
        self, office_id: str, body: dict[str, Any], key: str | None = None, token: str = PORTAL_KEY
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        if key:
            headers["Idempotency-Key"] = key
        return await self.client.post(f"/v1/offices/{office_id}/bookings", json=body, headers=headers)

    async def get(self, booking_id: str, token: str = PORTAL_KEY) -> dict[str, Any]:
        r = await self.client.get(f"/v1/bookings/{booking_id}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def staff(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(
            method, path, headers={"Authorization": f"Bearer {STAFF_KEY}"}, **kwargs
        )

    async def portal(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(
            method, path, headers={"Authorization": f"Bearer {PORTAL_KEY}"}, **kwargs
        )

    async def publish(
        self,
        body: dict[str, Any] | bytes,
        routing_key: str,
        exchange: str = topology.INTAKE,
        *,
        portal: str | None = None,
    ) -> None:
        await publish(self.amqp_url, body, routing_key, exchange, portal=portal)
        self.published += 1

    async def status_becomes(self, booking_id: str, status: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            view = await self.get(booking_id, STAFF_KEY)
            return view if view["status"] == status else None

        return await eventually(probe, what=f"{booking_id} {status}")


@asynccontextmanager
async def running(
    make_settings: Callable[..., Any], amqp_url: str, **overrides: Any
) -> AsyncIterator[Harness]:
    clock = FixedClock(NOW)
    settings = make_settings(Settings, dev_portal_key=PORTAL_KEY, dev_staff_key=STAFF_KEY, **overrides)
    app = create_app(settings, clock)
    async with serve(app) as client, tap(amqp_url) as t:
        yield Harness(client, clock, settings, amqp_url, t, app.state.runtime)


def announce_terms(
    h: Harness, monkeypatch: Any, office: str, version: str, *, announced_on: date, summary: str, **more: Any
) -> TermsVersion:
    """The office announces a new terms version (effective on the date its name spells) for this
    test only: the service's policy gains it (R17)."""
    service = h.client._transport.app.state.service  # type: ignore[attr-defined]
    policy = service.policy(office)
    coming = TermsVersion(
        version=version,
        effective_from=date.fromisoformat(version),
        announced_on=announced_on,
        summary=summary,
        **more,
    )
    monkeypatch.setitem(
        service.policies._by_id, office, policy.model_copy(update={"terms": [*policy.terms, coming]})
    )
    return coming
