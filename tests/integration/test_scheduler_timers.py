"""The timer wheel and its lease against a real FerretDB, on a fixed clock: one leader, take-over,
one firing per timer however many try, and how long a take-over of many pending timers takes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.scheduler.keeper import Context, Keeper
from services.scheduler.store import CounsellorStore, LeaseStore, RequestStore, Reservations, TimerStore
from services.scheduler.timing import TimerKind, TimerSpec
from services.scheduler.wheel import TimerWheel
from shared.clock import FixedClock
from shared.policy import Policies
from tests.integration.scheduler_helpers import DEMO_OFFICES, HW, ROOT, jst
from tests.support import eventually

NOW = jst(2026, 11, 30, 9, 0)


@pytest.fixture
async def db(mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str) -> AsyncIterator[Any]:
    yield mongo[f"{db_prefix}scheduler"]


def _context(db: Any, clock: FixedClock, replica: str) -> Context:
    ctx = Context(
        policies=Policies.load(ROOT / "deploy" / "offices", DEMO_OFFICES),
        counsellors=CounsellorStore(db),
        reservations=Reservations(db),
        requests=RequestStore(db),
        timers=TimerStore(db),
        clock=clock,
        replica_id=replica,
    )
    return ctx


def _wheel(ctx: Context, keeper: Keeper, ttl: float = 10.0) -> TimerWheel:
    return TimerWheel(
        ctx.timers,
        LeaseStore(ctx.timers.collection.database),
        ctx.clock,
        replica_id=ctx.replica_id,
        lease_ttl=timedelta(seconds=ttl),
        poll_seconds=3600,  # ticks are driven by the test
        horizon=timedelta(hours=1),
        on_due=keeper.fire,
    )


async def _confirmed(ctx: Context, booking_id: str, start: Any) -> None:
    """A request as the coordinator leaves it after confirming (version 1), with its no-show timer."""
    await ctx.requests.create(
        {
            "_id": booking_id,
            "office_id": HW,
            "status": "confirmed",
            "version": 1,
            "correlation_id": "6f1c8a52-5a0e-4a53-9c0b-8a4f1b0f2c11",
            "appointment": {"start": start, "version": 1},
        }
    )
    spec = TimerSpec(
        TimerKind.NO_SHOW,
        booking_id,
        HW,
        1,
        start + timedelta(minutes=10),
        {"start": start, "grace_seconds": 600},
    )
    await ctx.timers.arm(spec, correlation_id="6f1c8a52-5a0e-4a53-9c0b-8a4f1b0f2c11", now=ctx.clock.now())


async def test_one_replica_holds_the_lease_and_the_other_takes_over_when_it_expires(db: Any) -> None:
    clock = FixedClock(NOW)
    a, b = _context(db, clock, "a"), _context(db, clock, "b")
    wa, wb = _wheel(a, Keeper(a)), _wheel(b, Keeper(b))  # not started: the test drives the ticks
    try:
        await wa.tick()
        await wb.tick()
        assert [wa.leader, wb.leader].count(True) == 1
        leader, other = (wa, wb) if wa.leader else (wb, wa)
        clock.advance(timedelta(seconds=5))
        await leader.tick()  # renewed
        clock.advance(timedelta(seconds=8))
        await other.tick()
        assert not other.leader  # renewed 8 s ago: still valid
        clock.advance(timedelta(seconds=11))  # the leader stopped renewing (crashed): its lease ran out
        await other.tick()
        await leader.tick()
        assert (leader.leader, other.leader) == (False, True)
        assert (await other.lease.current() or {})["holder"] == other.replica_id
    finally:
        for w in (wa, wb):
            await w.stop()


async def test_a_timer_fires_once_however_many_replicas_try(db: Any) -> None:
    clock = FixedClock(NOW)
    contexts = [_context(db, clock, f"r{k}") for k in range(10)]
    await _confirmed(contexts[0], "b-race", NOW)
    clock.advance(timedelta(minutes=11))
    timer = await contexts[0].timers.get("b-race:no_show:v1")
    assert timer is not None
    fired = await asyncio.gather(*(Keeper(c).fire(timer) for c in contexts))
    assert fired.count(True) == 1
    outcome = await db["timer_outcomes"].find_one({"_id": "b-race:no_show:v1"})
    assert outcome["outcome"] == "fired" and len(outcome["outbox"]) == 1  # the event exists once
    assert outcome["outbox"][0]["type"] == "appointment.no_show" and outcome["lateness_seconds"] == 60.0
    timer = await db["timers"].find_one({"_id": "b-race:no_show:v1"})
    assert timer["status"] == "fired" and timer["event_id"] == outcome["event_id"]


async def test_r08_a_stale_timer_is_cancelled_not_fired(db: Any) -> None:
    clock = FixedClock(NOW)
    ctx = _context(db, clock, "r")
    await _confirmed(ctx, "b-gone", NOW)
    await ctx.requests.cancel("b-gone", HW, {})  # cancelled meanwhile; the timer was missed
    clock.advance(timedelta(minutes=11))
    timer = await ctx.timers.get("b-gone:no_show:v1")
    assert timer is not None
    assert not await Keeper(ctx).fire(timer)
    outcome = await db["timer_outcomes"].find_one({"_id": "b-gone:no_show:v1"})
    assert outcome["outcome"] == "cancelled" and outcome["cancel_reason"] == "stale" and not outcome["outbox"]


async def test_take_over_fires_the_late_timers_and_arms_the_rest(db: Any) -> None:
    clock = FixedClock(NOW)
    ctx = _context(db, clock, "r")
    late = [f"late-{k}" for k in range(50)]
    for bid in late:
        await _confirmed(ctx, bid, NOW - timedelta(minutes=30))
    future = [
        {
            "_id": f"future-{k}:hold:v1",
            "kind": "hold",
            "booking_id": f"future-{k}",
            "office_id": HW,
            "version": 1,
            "due_at": NOW + timedelta(seconds=k + 1),
            "status": "pending",
        }
        for k in range(1000)
    ]
    await db["timers"].insert_many(future)
    wheel = _wheel(ctx, Keeper(ctx))
    await wheel.start()  # its first tick takes the lease

    async def taken_over() -> Any:
        return wheel.stats["last_takeover"]

    try:
        stats = await eventually(taken_over, timeout=60, what="take-over")
        armed = len(wheel.armed)
    finally:
        await wheel.stop()
    assert stats["late_fired"] == 50 and armed == 1000
    assert await db["timers"].count_documents({"status": "fired"}) == 50
    print(f"\ntake-over: 50 late timers fired and 1000 armed in {stats['seconds']:.2f}s")
