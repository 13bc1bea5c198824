"""The scheduler in-process against real RabbitMQ and FerretDB, on a fixed clock (Sunday 2026-11-22)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from services.scheduler.app import create_app
from services.scheduler.coordinator import Coordinator
from services.scheduler.wheel import TimerWheel
from shared.clock import FixedClock
from shared.runtime import Runtime
from tests import support
from tests.support import eventually, serve
from tests.support.scheduler import (
    HW,
    KG,
    STAFF,
    Booking,
    Probe,
    jst,
    probe,
    put_counsellor,
    request_doc,
    scheduler_settings,
)

SUNDAY = jst(2026, 11, 22, 10, 0)


@dataclass
class Running:
    client: httpx.AsyncClient
    clock: FixedClock
    probe: Probe
    booking: Booking
    coordinator: Coordinator
    wheel: TimerWheel
    runtime: Runtime

    async def quiet(self) -> None:
        """Negative checks: the scheduler settled every event sent, published what that caused, and
        the probe has seen it all."""
        await support.quiet(self.runtime, settled=self.booking.sent)
        await self.probe.flush()

    async def timers(self, booking_id: str, status: str = "all") -> dict[str, dict[str, Any]]:
        params = {"booking_id": booking_id, "status": "" if status == "all" else status}
        r = await self.client.get("/v1/staff/timers", params=params, headers=STAFF)
        return {t["kind"]: t for t in r.json()}

    async def cells(self, booking_id: str) -> list[dict[str, Any]]:
        """The counsellors' cells the booking holds (not its pre-issued room's: `all_cells`)."""
        return [c for c in await self.all_cells(booking_id) if not c["counsellor_id"].startswith("room:")]

    async def all_cells(self, booking_id: str) -> list[dict[str, Any]]:
        return await self.coordinator.ctx.reservations.of_booking(booking_id)

    async def advance_to(self, at: Any) -> None:
        self.clock.set(at)
        await self.wheel.fire_due()


@asynccontextmanager
async def scheduler(make_settings: Callable[..., Any], amqp_url: str) -> AsyncIterator[Running]:
    clock = FixedClock(SUNDAY)
    app = create_app(scheduler_settings(make_settings), clock)
    async with probe(amqp_url) as seen, serve(app) as client:  # the probe outlives the relays
        await put_counsellor(client, KG, "kg-kushiro", areas=["釧路"])
        await put_counsellor(client, KG, "kg-tokachi", areas=["十勝"], apps=["skype-for-business"])
        await put_counsellor(client, HW, "hw-one")
        yield Running(
            client,
            clock,
            seen,
            Booking(amqp_url, clock),
            app.state.coordinator,
            app.state.wheel,
            app.state.runtime,
        )


async def test_confirms_the_earliest_free_slot_through_the_outbox(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        event = s.booking.requested(
            KG, [(jst(2026, 11, 30, 10, 0), jst(2026, 11, 30, 12, 0))], minutes=30, area="釧路"
        )
        await s.booking.send(event)
        (confirmed,) = await s.probe.wait("appointment.confirmed", event.payload.booking_id)
    a = confirmed.payload.appointment
    assert (a.counsellor_id, a.start, a.end, a.version) == (
        "kg-kushiro",
        jst(2026, 11, 30, 10, 0),
        jst(2026, 11, 30, 10, 30),
        1,
    )
    assert a.app == "teams" and a.meeting_url.startswith(f"{support.GRAPH_URL}/meet/")  # R16: Graph's
    assert confirmed.correlation_id == event.correlation_id and confirmed.causation_id == event.event_id
    assert confirmed.producer == "scheduler"


async def test_r20_kg_request_goes_to_a_commissioner_of_its_area(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        event = s.booking.requested(KG, [(jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 17, 0))], area="十勝")
        await s.booking.send(event)
        (confirmed,) = await s.probe.wait("appointment.confirmed", event.payload.booking_id)
    assert confirmed.payload.appointment.counsellor_id == "kg-tokachi"
    assert confirmed.payload.appointment.app == "skype-for-business"  # R16: the app this commissioner hosts


async def test_r01_a_longer_request_gets_30_minutes(make_settings: Callable[..., Any], amqp_url: str) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        event = s.booking.requested(HW, [(jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 11, 0))], minutes=60)
        await s.booking.send(event)
        (confirmed,) = await s.probe.wait("appointment.confirmed", event.payload.booking_id)
        a = confirmed.payload.appointment
        assert a.end - a.start == timedelta(minutes=30)
        assert len(await s.cells(event.payload.booking_id)) == 1  # one 30-minute grid cell


async def _armed(s: Running, booking_id: str, kinds: set[str]) -> dict[str, dict[str, Any]] | None:
    timers = await s.timers(booking_id, "pending")
    return timers if set(timers) >= kinds else None


async def test_r06_hw_notice_timer_fires_on_the_open_day_before(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        event = s.booking.requested(HW, [(jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 10, 0))])
        bid = event.payload.booking_id
        await s.booking.send(event)
        await s.probe.wait("appointment.confirmed", bid)
        # the confirmation can be out before tidy armed both timers (one insert each): wait for both
        timers = await eventually(lambda: _armed(s, bid, {"notice", "no_show"}), what="both timers armed")
        assert timers["notice"]["due_at"].startswith("2026-11-27T01:00:00")  # Fri 10:00 JST for Mon
        await s.advance_to(jst(2026, 11, 27, 9, 59))
        await s.quiet()
        assert s.probe.of("appointment.notice_due", bid) == []
        await s.advance_to(jst(2026, 11, 27, 10, 0, 30))
        (notice,) = await s.probe.wait("appointment.notice_due", bid)
        metrics = (await s.client.get("/metrics/")).text
    assert notice.payload.appointment_version == 1 and notice.payload.lateness_seconds == 30.0
    assert "consult_scheduler_timer_leader 1.0" in metrics
    assert 'consult_scheduler_timers_fired_total{kind="notice"} 1.0' in metrics
    assert 'consult_scheduler_requests_total{outcome="confirmed"} 1.0' in metrics


async def test_r06_kg_arms_no_notice_timer(make_settings: Callable[..., Any], amqp_url: str) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        event = s.booking.requested(KG, [(jst(2026, 11, 30, 10, 0), jst(2026, 11, 30, 12, 0))], area="釧路")
        await s.booking.send(event)
        await s.probe.wait("appointment.confirmed", event.payload.booking_id)
        timers = await eventually(lambda: s.timers(event.payload.booking_id), what="timers armed")
    assert set(timers) == {"no_show"}


async def test_r08_no_show_fires_after_the_grace_unless_attended(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        absent = s.booking.requested(HW, [(jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 9, 30))])
        present = s.booking.requested(HW, [(jst(2026, 11, 30, 9, 30), jst(2026, 11, 30, 10, 0))])
        await s.booking.send(absent, present)
        await s.probe.wait("appointment.confirmed", n=2)
        s.clock.set(jst(2026, 11, 30, 9, 5))
        await s.booking.send(s.booking.attended(HW, present.payload.booking_id))
        await eventually(
            lambda: s.timers(present.payload.booking_id, "cancelled"),
            what="attended disarms the no-show timer",
        )
        await s.advance_to(jst(2026, 11, 30, 9, 9, 59))
        await s.quiet()
        assert s.probe.of("appointment.no_show") == []
        await s.advance_to(jst(2026, 11, 30, 10, 0))
        (no_show,) = await s.probe.wait("appointment.no_show")
        await s.quiet()
        assert len(s.probe.of("appointment.no_show")) == 1
    assert no_show.payload.booking_id == absent.payload.booking_id
    assert no_show.payload.grace_minutes == 10 and no_show.payload.start == jst(2026, 11, 30, 9, 0)
    assert no_show.payload.lateness_seconds == 50 * 60.0  # fired at 10:00 for a 9:10 deadline


async def test_cancellation_frees_the_slot_and_disarms_every_timer(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    window = [(jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 9, 30))]
    async with scheduler(make_settings, amqp_url) as s:
        first = s.booking.requested(HW, window)
        await s.booking.send(first)
        await s.probe.wait("appointment.confirmed", first.payload.booking_id)
        await eventually(
            lambda: _armed(s, first.payload.booking_id, {"notice", "no_show"}), what="timers armed"
        )
        await s.booking.send(s.booking.cancelled(HW, first.payload.booking_id))

        async def disarmed() -> bool:
            timers = await s.timers(first.payload.booking_id)
            return bool(timers) and all(t["status"] == "cancelled" for t in timers.values())

        await eventually(disarmed, what="timers cancelled")
        assert await s.cells(first.payload.booking_id) == []
        second = s.booking.requested(HW, window)
        await s.booking.send(second)
        (confirmed,) = await s.probe.wait("appointment.confirmed", second.payload.booking_id)
        assert confirmed.payload.appointment.start == jst(2026, 11, 30, 9, 0)
        await s.advance_to(jst(2026, 11, 30, 12, 0))
        await s.probe.wait("appointment.no_show", second.payload.booking_id)
        await s.quiet()
        assert s.probe.of("appointment.no_show", first.payload.booking_id) == []


async def test_redelivered_request_confirms_once(make_settings: Callable[..., Any], amqp_url: str) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        event = s.booking.requested(HW, [(jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 9, 30))])
        await s.booking.send(event)
        await s.probe.wait("appointment.confirmed", event.payload.booking_id)
        await s.coordinator.requested(event)  # as if the broker delivered it again after a crash
        await s.quiet()
        assert len(s.probe.of("appointment.confirmed", event.payload.booking_id)) == 1
        assert len(await s.cells(event.payload.booking_id)) == 1
        assert (await request_doc(s.client, event.payload.booking_id))["status"] == "confirmed"
