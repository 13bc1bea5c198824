"""Issue 14: each portal sends its AMQP commands as its own broker user, and the same rate limits
hold over AMQP as over HTTP (real RabbitMQ and FerretDB; the clock fixed).

`portal_id` in a command is only a claim. RabbitMQ verifies the AMQP `user_id` property against the
login, so booking takes the portal from `user_id` (`portal.<portal id>`) and parks a command whose
claim differs, or that carries no `user_id`, with the reason `portal-identity`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import aio_pika
import pytest

from examples import forms
from shared import topology
from shared.commands import booking_id_for
from tests import support
from tests.support import eventually, unique
from tests.support.booking import KG, PORTAL_KEY, Harness, parked, running

TUE = date(2026, 11, 24)


@pytest.fixture
async def h(make_settings: Callable[..., Any], amqp_url: str) -> AsyncIterator[Harness]:
    async with running(make_settings, amqp_url) as harness:
        yield harness


def kg(h: Harness, **fields: Any) -> dict[str, Any]:
    return forms.kg_form(h.policy(KG), TUE, h.now, **fields)


def service_of(h: Harness) -> Any:
    return h.client._transport.app.state.service  # type: ignore[attr-defined]


async def parked_reasons(h: Harness, n: int) -> dict[str, str]:
    """message id -> park reason, once `n` messages are parked."""
    await eventually(lambda: _parked_at_least(h, n), what=f"{n} parked message(s) in booking.parking")
    return {
        str(m.message_id): str((m.headers or {})[topology.REASON_HEADER]) for m in await parked(h.amqp_url)
    }


async def _parked_at_least(h: Harness, n: int) -> bool:
    return bool(h.runtime.consumer.stats["parked"] >= n)


async def test_a_portal_cannot_book_as_another_portal_over_amqp(h: Harness) -> None:
    """The attack of issue 14: a portal's own user, claiming another portal's id, is parked with
    the reason; nothing is booked and the victim portal hears nothing."""
    now = h.now
    await service_of(h).stores.credentials.create("portal", "other-portal", [KG], now)
    claims_dev = forms.booking_command("dev-portal", KG, unique("as-other-"), kg(h), sent_at=now)
    unnamed = forms.booking_command("dev-portal", KG, unique("no-user-id-"), kg(h), sent_at=now)
    forged = forms.booking_command("dev-portal", KG, unique("forged-"), kg(h), sent_at=now)
    as_guest = forms.booking_command("dev-portal", KG, unique("guest-"), kg(h), sent_at=now)
    raw = {
        name: json.dumps(cmd).encode()
        for name, cmd in {
            "other": claims_dev,
            "unnamed": unnamed,
            "forged": forged,
            "guest": as_guest,
        }.items()
    }

    ids = {name: json.loads(body)["message_id"] for name, body in raw.items()}
    await support.publish_as_portal(
        h.amqp_url, raw["other"], "booking.request", "other-portal", message_id=ids["other"]
    )
    await support.publish_as_portal(
        h.amqp_url, raw["unnamed"], "booking.request", user_id=False, message_id=ids["unnamed"]
    )
    # a header that looks like the one booking seals onto its own retried copies is worth nothing
    fake = {topology.SENDER_HEADER: "v1.bm90IHNlYWxlZA"}
    await support.publish_as_portal(
        h.amqp_url, raw["forged"], "booking.request", "other-portal", message_id=ids["forged"], headers=fake
    )
    conn = await aio_pika.connect(h.amqp_url)  # the vhost's administrator, with no user_id either
    async with conn:
        ex = await (await conn.channel(publisher_confirms=True)).get_exchange(topology.INTAKE)
        await ex.publish(
            aio_pika.Message(raw["guest"], message_id=ids["guest"]), routing_key="booking.request"
        )
    h.published += 4

    reasons = await parked_reasons(h, 4)
    for cmd in (claims_dev, unnamed, forged, as_guest):
        assert reasons[cmd["message_id"]] == "portal-identity", reasons
    await h.quiet()
    for cmd in (claims_dev, unnamed, forged, as_guest):
        booking_id = booking_id_for("dev-portal", cmd["idempotency_key"])
        assert await service_of(h).stores.bookings.get(booking_id) is None
        r = await h.portal("GET", f"/v1/requests/{cmd['idempotency_key']}")
        assert r.status_code == 404, r.text
    assert h.events.of("booking.rejected") == [] and h.events.of("booking.requested") == []


async def test_the_portals_own_user_books_and_its_claim_is_checked_against_its_offices(h: Harness) -> None:
    now = h.now
    await service_of(h).stores.credentials.create("portal", "hw-only", ["kohoku-hellowork"], now)
    mine = forms.booking_command("dev-portal", KG, unique("own-"), kg(h), sent_at=now)
    not_for_kg = forms.booking_command("hw-only", KG, unique("hw-only-"), kg(h), sent_at=now)
    await h.publish(mine, "booking.request")  # as portal.dev-portal, user_id set
    await h.publish(not_for_kg, "booking.request")  # as portal.hw-only: its own id, not its office
    await h.events.wait("booking.requested", booking_id=booking_id_for("dev-portal", mine["idempotency_key"]))
    reasons = await parked_reasons(h, 1)
    assert reasons[not_for_kg["message_id"]] == "portal-not-authorised"


async def test_a_retried_command_keeps_the_sender_the_broker_verified(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy booking delays for another attempt is re-published under booking's own login, so it
    carries the first sender sealed (bound to its id and body); it is then booked, not parked."""
    credentials = service_of(h).stores.credentials
    real = credentials.portal_known
    calls = {"n": 0}

    async def flaky(portal_id: str, office_id: str) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("the credentials lookup failed once")
        return await real(portal_id, office_id)

    monkeypatch.setattr(credentials, "portal_known", flaky)
    cmd = forms.booking_command("dev-portal", KG, unique("retried-"), kg(h), sent_at=h.now)
    await h.publish(cmd, "booking.request")
    booking_id = booking_id_for("dev-portal", cmd["idempotency_key"])
    await h.events.wait("booking.requested", booking_id=booking_id, timeout=30)
    stats = h.runtime.consumer.stats
    assert (stats["retried"], stats["parked"]) == (1, 0), stats


async def test_amqp_commands_count_against_the_portals_http_rate_limit(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """One budget per portal, whichever way its requests come: over AMQP the refusal is a
    booking.rejected `rate-limited` and the key stays free, so the same command succeeds later."""
    async with running(make_settings, amqp_url, rate_limit_portal=3, rate_limit_person=0) as h:
        h.clock.set(h.now.replace(second=0, microsecond=0))  # the start of a 60 s window
        cmds = [
            forms.booking_command("dev-portal", KG, unique(f"limit-{i}-"), kg(h), sent_at=h.now)
            for i in range(4)
        ]
        for cmd in cmds[:3]:
            await h.publish(cmd, "booking.request")
            await h.events.wait(
                "booking.requested", booking_id=booking_id_for("dev-portal", cmd["idempotency_key"])
            )
        await h.publish(cmds[3], "booking.request")
        [rejected] = await h.events.wait("booking.rejected", request_id=cmds[3]["idempotency_key"])
        assert "too many requests from this portal" in rejected["payload"]["message"]
        assert rejected["causation_id"] == cmds[3]["message_id"]
        http = await h.book(KG, kg(h), key=unique("http-"), token=PORTAL_KEY)
        assert http.status_code == 429, http.text  # the same portal's budget is spent
        r = await h.portal("GET", f"/v1/requests/{cmds[3]['idempotency_key']}")
        assert r.status_code == 404  # the key was not taken: the portal sends it again later

        h.clock.advance(timedelta(seconds=60))  # the next window
        again = {**cmds[3], "message_id": str(uuid.uuid4())}
        await h.publish(again, "booking.request")
        booking_id = booking_id_for("dev-portal", cmds[3]["idempotency_key"])
        await h.events.wait("booking.requested", booking_id=booking_id)
        await h.quiet()
        assert len(h.events.of("booking.rejected")) == 1
