"""The timer wheel's due markers on the real server (fixed clock): a take-over reads the buckets of
the days from the watermark to the horizon, not every pending timer; later days load as the horizon
reaches them; stale markers are never believed; timers from before the markers are backfilled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.scheduler.keeper import Context, Keeper
from services.scheduler.store import LeaseStore
from services.scheduler.store.timers import WHEEL, day_key
from services.scheduler.wheel import TimerWheel
from shared.clock import FixedClock
from shared.mongo import connect
from tests.integration import test_scheduler_timers as timers_test
from tests.support import MONGODB_URL, CommandShapes, eventually
from tests.support.scheduler import HW, jst

NOW = jst(2026, 11, 30, 9, 0)
TODAY = date(2026, 11, 30)
CORR = "6f1c8a52-5a0e-4a53-9c0b-8a4f1b0f2c11"


@pytest.fixture
async def db(mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str) -> AsyncIterator[Any]:
    yield mongo[f"{db_prefix}scheduler"]


def _context(db: Any, clock: FixedClock, replica: str = "r") -> Context:
    return timers_test._context(db, clock, replica)


def _wheel(ctx: Context) -> TimerWheel:
    wheel = TimerWheel(
        ctx.timers,
        LeaseStore(ctx.timers.collection.database),
        ctx.clock,
        replica_id=ctx.replica_id,
        lease_ttl=timedelta(hours=24),  # the test moves the clock by days between ticks
        poll_seconds=3600,  # ticks are driven by the test
        horizon=timedelta(hours=1),
        on_due=Keeper(ctx).fire,
    )
    ctx.timers.on_arm = wheel.arm
    return wheel


async def _confirmed(ctx: Context, booking_id: str, start: Any) -> str:
    """A confirmed request (version 1) with its no-show timer, due 10 minutes after the start."""
    await timers_test._confirmed(ctx, booking_id, start)
    return f"{booking_id}:no_show:v1"


async def _marked(db: Any, day: date) -> set[str]:
    return {d["_id"] async for d in db[f"timer_due.{WHEEL}.{day_key(day)}"].find({})}


async def _take_over(wheel: TimerWheel) -> dict[str, Any]:
    await wheel.tick()
    assert wheel.leader
    return dict(wheel.stats["last_takeover"])


async def test_take_over_reads_only_its_days_due_markers_and_loads_later_days_when_due(db: Any) -> None:
    clock = FixedClock(NOW)
    writer = _context(db, clock, "writer")
    await writer.timers.backfill(NOW)  # an empty database: markers from the start
    late = await _confirmed(writer, "b-late", NOW - timedelta(minutes=20))  # due 10 minutes ago
    soon = await _confirmed(writer, "b-soon", NOW + timedelta(minutes=20))
    far = await _confirmed(writer, "b-far", NOW + timedelta(days=2))
    # history the take-over must not depend on: 300 pending timers on later days, resolved ones before
    for k in range(300):
        await _confirmed(writer, f"b-later-{k}", NOW + timedelta(days=3 + k % 20))
    await db["timer_feed"].delete_many({})  # as if merged by a leader that then crashed
    listener = CommandShapes()
    client = connect(MONGODB_URL, app_name="test-due-markers", listeners=[listener])
    ctx = _context(client[db.name], clock)
    wheel = _wheel(ctx)
    try:
        listener.on = True
        await wheel.start()  # its first tick takes the lease (and APScheduler runs, for the arming)

        async def taken_over() -> Any:
            return wheel.stats["last_takeover"]

        stats = await eventually(taken_over, timeout=20, what="take-over")
        assert stats["late_fired"] == 1 and stats["pending"] == 2
        assert set(wheel.index.due) == {soon} and wheel.armed == {soon}
        read = [q for q in listener.seen if q[0] == "find" and q[2] != "id"]
        # the watermark (yesterday, set by the backfill on an empty database: today) to the horizon
        assert {q[1] for q in read} <= {f"timer_due.{WHEEL}.{day_key(TODAY)}", "timer_feed"}
        assert not [q for q in listener.scans() if q[1] in ("timers", "timer_outcomes")]
        assert late not in await _marked(db, TODAY), "a fired timer's marker goes"

        listener.seen.clear()
        clock.advance(timedelta(days=2) - timedelta(minutes=30))
        await wheel.tick()  # the horizon reached b-far's day: its bucket is read
        assert far in wheel.armed and not any(k.startswith("b-later") for k in wheel.index.due)
        clock.advance(timedelta(hours=1))
        await wheel.tick()
        assert (await ctx.timers.get(far) or {})["status"] == "fired"
        assert not [q for q in listener.scans() if q[1] in ("timers", "timer_outcomes")]
        assert len(wheel.index) == 0
    finally:
        await wheel.stop()
        await client.close()


async def test_a_timer_armed_already_late_is_marked_on_the_day_it_was_armed(db: Any) -> None:
    """A timer armed after its due time (a late confirmation) lands in the bucket of the day it was
    armed, which a take-over still reads, not in a past day behind the watermark."""
    clock = FixedClock(NOW)
    ctx = _context(db, clock)
    await ctx.timers.backfill(NOW)
    overdue = await _confirmed(ctx, "b-overdue", NOW - timedelta(days=3))
    assert overdue in await _marked(db, TODAY)
    await db["timer_feed"].delete_many({})
    stats = await _take_over(_wheel(ctx))
    assert stats["late_fired"] == 1
    assert (await ctx.timers.get(overdue) or {})["status"] == "fired"


async def test_cancelled_and_missing_timers_leave_no_marker_believed(db: Any) -> None:
    clock = FixedClock(NOW)
    ctx = _context(db, clock)
    await ctx.timers.backfill(NOW)
    cancelled = await _confirmed(ctx, "b-cancelled", NOW + timedelta(minutes=5))
    assert await ctx.timers.cancel("b-cancelled", reason="cancelled", now=NOW, version=1) == 1
    assert cancelled not in await _marked(db, TODAY)
    # a writer crashed between its marker and its timer: the marker points at nothing
    buckets = await ctx.timers.due_buckets()
    await buckets.add(WHEEL, TODAY, "b-crashed:no_show:v1", {"due_at": NOW - timedelta(minutes=1)})
    # a marker left behind by a crash after the outcome insert
    stale = await _confirmed(ctx, "b-stale", NOW + timedelta(minutes=5))
    await db["timer_outcomes"].insert_one({"_id": stale, "outcome": "cancelled", "outbox": []})
    await db["timer_feed"].delete_many({})
    wheel = _wheel(ctx)
    stats = await _take_over(wheel)
    assert stats["late_fired"] == 1 and wheel.stats["fired"] == 0  # the missing one: nothing to fire
    clock.advance(timedelta(minutes=20))
    assert await wheel.fire_due() == 1  # the stale one, read by `_id`: resolved, not fired again
    assert wheel.stats["fired"] == 0 and len(wheel.index) == 0
    outcome = await db["timer_outcomes"].find_one({"_id": stale})
    assert outcome["outcome"] == "cancelled"


async def test_past_days_are_settled_and_the_watermark_moves_past_them(db: Any) -> None:
    clock = FixedClock(NOW)
    ctx = _context(db, clock)
    await ctx.timers.backfill(NOW)
    fired = await _confirmed(ctx, "b-fired", NOW + timedelta(minutes=5))
    stuck = await _confirmed(ctx, "b-stuck", NOW + timedelta(days=1, minutes=5))
    buckets = await ctx.timers.due_buckets()
    await buckets.add(WHEEL, TODAY, "b-crashed:no_show:v1", {"due_at": NOW + timedelta(minutes=6)})
    wheel = _wheel(ctx)

    async def never(_doc: Any) -> bool:
        raise RuntimeError("cannot fire now")

    await _take_over(wheel)
    clock.advance(timedelta(minutes=20))
    await wheel.tick()
    assert (await ctx.timers.get(fired) or {})["status"] == "fired"
    wheel.on_due = never  # b-stuck stays pending past its day
    clock.advance(timedelta(days=4))
    await wheel.tick()
    await wheel.settle_past_days()
    # today's bucket (the crashed writer's marker only) is settled and dropped; the next day holds
    # the pending b-stuck: the watermark stops there
    assert await ctx.timers.watermark(TODAY) == TODAY + timedelta(days=1)
    assert await _marked(db, TODAY) == set() and await _marked(db, TODAY + timedelta(days=1)) == {stuck}
    wheel.on_due = Keeper(ctx).fire
    await wheel.tick()
    assert (await ctx.timers.get(stuck) or {})["status"] == "fired"
    await wheel.settle_past_days()
    assert await ctx.timers.watermark(TODAY) == TODAY + timedelta(days=3)  # up to yesterday, kept
    # a new leader reads from the watermark: nothing of the settled days
    await wheel.stop()
    other = _wheel(_context(db, clock, "other"))
    clock.advance(timedelta(days=2))  # the first wheel's lease has run out
    stats = await _take_over(other)
    assert stats["pending"] == 0
    await other.stop()


async def test_timers_written_before_the_markers_are_backfilled_by_the_first_take_over(db: Any) -> None:
    """An existing database: the first take-over reads every pending timer once (as before) and
    writes their markers; the next one reads the markers only."""
    clock = FixedClock(NOW)
    old = [
        {
            "_id": f"old-{k}:no_show:v1",
            "kind": "no_show",
            "booking_id": f"old-{k}",
            "office_id": HW,
            "version": 1,
            "due_at": NOW + timedelta(hours=k),
            "status": "pending",
            "armed_at": NOW - timedelta(days=1),
        }
        for k in range(1, 50)
    ]
    await db["timers"].insert_many(old)
    ctx = _context(db, clock, "first")
    assert not await ctx.timers.markers_ready()
    first = _wheel(ctx)
    stats = await _take_over(first)
    assert stats["pending"] == 49 and await ctx.timers.markers_ready()
    marked = set()
    for k in range(4):
        marked |= await _marked(db, TODAY + timedelta(days=k))
    assert marked == {d["_id"] for d in old}
    await first.stop()  # releases the lease
    clock.advance(timedelta(seconds=1))
    listener = CommandShapes(("timers", "timer_outcomes"))
    client = connect(MONGODB_URL, app_name="test-due-markers", listeners=[listener])
    second = _wheel(_context(client[db.name], clock, "second"))
    try:
        listener.on = True
        stats = await _take_over(second)
        # 09:00 + 1 h horizon: today's markers (due by 23:59 JST), not the days after
        assert stats["pending"] == 14 and listener.scans() == []
    finally:
        await second.stop()
        await client.close()


async def test_a_feed_entry_of_a_later_day_is_merged_without_a_read(db: Any) -> None:
    clock = FixedClock(NOW)
    leader = _context(db, clock, "leader")
    await leader.timers.backfill(NOW)
    wheel = _wheel(leader)
    await _take_over(wheel)
    other = _context(db, clock, "other")
    far = await _confirmed(other, "b-feed-far", NOW + timedelta(days=1))
    soon = await _confirmed(other, "b-feed-soon", NOW + timedelta(minutes=5))
    await wheel.tick()
    assert set(wheel.index.due) == {soon} and await db["timer_feed"].count_documents({}) == 0
    assert far in await _marked(db, TODAY + timedelta(days=1))
    clock.advance(timedelta(days=1))
    await wheel.tick()  # its day entered the horizon: read from the bucket
    assert set(wheel.index.due) == {far}
    await wheel.stop()
