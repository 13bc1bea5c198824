"""The timer wheel and its lease against a real FerretDB, on a fixed clock: one leader, take-over,
one firing per timer however many try, and how long a take-over of many pending timers takes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.scheduler import seed
from services.scheduler.keeper import Context, Keeper
from services.scheduler.store import LeaseStore
from services.scheduler.store.counsellors import CounsellorStore
from services.scheduler.timing import TimerKind, TimerSpec
from services.scheduler.wheel import TakeOverStalled, TimerWheel
from shared.clock import FixedClock
from shared.events import BookingAttended, new_event
from shared.mongo import connect
from shared.policy import Policies
from shared.store.outbox import pending_markers
from tests.support import MONGODB_URL, CommandShapes, eventually
from tests.support.scheduler import DEMO_OFFICES, HW, ROOT, jst

NOW = jst(2026, 11, 30, 9, 0)


@pytest.fixture
async def db(mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str) -> AsyncIterator[Any]:
    yield mongo[f"{db_prefix}scheduler"]


def _context(db: Any, clock: FixedClock, replica: str) -> Context:
    return Context.without_graph(db, Policies.load(ROOT / "deploy" / "offices", DEMO_OFFICES), clock, replica)


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
    timer = await contexts[0].timers.get("b-race:no_show:v1")  # the timer with its outcome
    assert timer["status"] == "fired" and timer["event_id"] == outcome["event_id"]
    # the nine refused took their markers back: the relay has only the winner's event to settle
    # (a left marker kept the backlog up for its 300 s grace, and a quiet check timed out)
    markers = await db["timer_outcomes_pending"].find({}).to_list()
    assert [m["events"] for m in markers] == [[outcome["event_id"]]]


async def test_a_timer_due_to_a_tick_and_to_its_job_at_once_is_run_by_one_of_them(db: Any) -> None:
    """At its due time a timer is both in the tick's due list and an APScheduler job: one runs it."""
    clock = FixedClock(NOW)
    ctx = _context(db, clock, "r")
    await _confirmed(ctx, "b-both", NOW)
    clock.advance(timedelta(minutes=11))
    keeper, runs, release = Keeper(ctx), [], asyncio.Event()

    async def on_due(doc: dict[str, Any]) -> bool:
        runs.append(doc["_id"])
        if len(runs) == 1:
            await release.wait()  # the job's run is under way while the tick looks
        return await keeper.fire(doc)

    wheel = _wheel(ctx, keeper)
    wheel.on_due = on_due
    wheel.leader = True
    wheel.index.add("b-both:no_show:v1", NOW + timedelta(minutes=10))
    job = asyncio.create_task(wheel._job("b-both:no_show:v1"))
    await eventually(lambda: _true(bool(runs)), what="the job running the timer")
    await wheel.fire_due()  # the tick finds it due too
    release.set()
    await job
    assert runs == ["b-both:no_show:v1"]
    await wheel.fire_due()  # the tick that stood aside looks again: fired, forgotten
    assert "b-both:no_show:v1" not in wheel.index and runs == ["b-both:no_show:v1"]


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
    assert await db["timer_outcomes"].count_documents({"outcome": "fired"}) == 50
    print(f"\ntake-over: 50 late timers fired and 1000 armed in {stats['seconds']:.2f}s")


async def test_a_stalled_take_over_is_abandoned_and_the_next_tick_takes_over(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: a take-over's scan once hung for 90 s (FerretDB, at start-up) and no timer fired
    meanwhile. Its reads are bounded: a stalled one steps down, and the next tick reads afresh."""
    clock = FixedClock(NOW)
    ctx = _context(db, clock, "r")
    await _confirmed(ctx, "late-after-stall", NOW - timedelta(minutes=30))
    wheel = TimerWheel(
        ctx.timers,
        LeaseStore(db),
        clock,
        replica_id="r",
        lease_ttl=timedelta(seconds=10),
        poll_seconds=3600,  # ticks are driven by the test
        horizon=timedelta(hours=1),
        on_due=Keeper(ctx).fire,
        takeover_read_timeout=0.5,
    )
    real_pending, never = ctx.timers.pending, asyncio.Event()
    calls = {"n": 0}

    async def stalls_once() -> list[tuple[str, Any]]:
        calls["n"] += 1
        if calls["n"] == 1:
            await never.wait()  # a read that never answers
        return await real_pending()

    monkeypatch.setattr(ctx.timers, "pending", stalls_once)
    with pytest.raises(TakeOverStalled, match="scanning the pending timers"):
        await wheel.tick()
    assert (wheel.leader, wheel.stats["stalled_takeovers"], wheel._read_bound) == (False, 1, 1.0)
    await wheel.tick()  # the lease is still ours: take over again, from a fresh read
    assert wheel.leader and wheel.stats["last_takeover"]["late_fired"] == 1
    assert wheel._read_bound == 0.5  # back to the configured bound once a take-over succeeds
    assert await db["timer_outcomes"].count_documents({"outcome": "fired"}) == 1


# --------------------------------------------------------------------------- no scans per tick or message


async def _request(ctx: Context, booking_id: str, status: str, version: int, **fields: Any) -> None:
    await ctx.requests.create(
        {
            "_id": booking_id,
            "office_id": HW,
            "status": status,
            "version": version,
            "correlation_id": "6f1c8a52-5a0e-4a53-9c0b-8a4f1b0f2c11",
            **fields,
        }
    )


async def test_a_timer_armed_by_a_non_leader_is_fired_by_the_leader_via_the_feed(db: Any) -> None:
    clock = FixedClock(NOW)
    a, b = _context(db, clock, "a"), _context(db, clock, "b")
    wa, wb = _wheel(a, Keeper(a)), _wheel(b, Keeper(b))
    await wa.start()  # its first tick takes the lease
    try:
        await eventually(lambda: _true(wa.leader), timeout=10, what="a leads")
        await wb.tick()
        assert not wb.leader
        await _confirmed(b, "b-feed", NOW + timedelta(minutes=1))  # armed on the replica that does not lead
        timer_id = "b-feed:no_show:v1"
        assert timer_id not in wa.index and await db["timer_feed"].find_one({"_id": timer_id})
        await wa.tick()
        assert wa.index.due.get(timer_id) == NOW + timedelta(minutes=11)
        assert await db["timer_feed"].count_documents({}) == 0  # merged, so deleted
        clock.advance(timedelta(minutes=12))
        await wa.tick()
        timer = await a.timers.get(timer_id)
        assert timer is not None
        assert timer["status"] == "fired" and timer["fired_by"] == "a" and timer["lateness_seconds"] == 60.0
        assert timer_id not in wa.index and len(wb.index) == 0
    finally:
        for w in (wa, wb):
            await w.stop()


async def test_a_request_update_that_loses_its_revision_takes_its_marker_back(db: Any) -> None:
    clock = FixedClock(NOW)
    ctx = _context(db, clock, "r")
    await _confirmed(ctx, "b-rev", NOW)
    read = await ctx.requests.get("b-rev")
    assert read is not None
    won = new_event(
        BookingAttended(booking_id="b-rev", how="joined", at=NOW), office_id=HW, producer="t", clock=clock
    )
    lost = new_event(
        BookingAttended(booking_id="b-rev", how="contacted", at=NOW), office_id=HW, producer="t", clock=clock
    )
    assert await ctx.requests.update(read, {"note": "first"}, [won])
    assert not await ctx.requests.update(read, {"note": "second"}, [lost])  # read before the first
    markers = await pending_markers(ctx.requests.collection).find({}).to_list()
    assert [m["events"] for m in markers] == [[str(won.event_id)]]


async def _true(value: bool) -> bool:
    return value


async def test_an_orphaned_feed_entry_is_dropped_after_its_grace_and_a_late_write_is_taken(db: Any) -> None:
    clock = FixedClock(NOW)
    ctx = _context(db, clock, "r")
    wheel = _wheel(ctx, Keeper(ctx))
    due = NOW + timedelta(hours=5)
    try:
        await wheel.tick()
        assert wheel.leader
        # two writers announced their timers; one crashed before its insert, one is just slow
        for bid in ("b-orphan", "b-slow"):
            await db["timer_feed"].insert_one({"_id": f"{bid}:no_show:v1", "due_at": due, "at": NOW})
        await wheel.tick()
        assert await db["timer_feed"].count_documents({}) == 2 and len(wheel.index) == 0  # kept
        await _confirmed(ctx, "b-slow", due - timedelta(minutes=10))  # the slow writer's insert
        clock.advance(wheel.feed_grace - timedelta(seconds=1))
        await wheel.tick()
        assert "b-slow:no_show:v1" in wheel.index
        assert [d["_id"] async for d in db["timer_feed"].find({})] == ["b-orphan:no_show:v1"]
        clock.advance(timedelta(seconds=2))  # now past the orphan's grace
        await wheel.tick()
        assert await db["timer_feed"].count_documents({}) == 0 and wheel.stats["feed_dropped"] == 1
        assert "b-orphan:no_show:v1" not in wheel.index
    finally:
        await wheel.stop()


async def test_before_the_backfill_a_take_over_reads_every_pending_timer_once(db: Any) -> None:
    clock = FixedClock(NOW)
    ctx = _context(db, clock, "r")
    await _confirmed(ctx, "b-late", NOW - timedelta(minutes=20))  # due 10 minutes ago
    await _confirmed(ctx, "b-soon", NOW + timedelta(minutes=20))  # within the 1 h horizon
    await _confirmed(ctx, "b-far", NOW + timedelta(days=2))  # beyond it
    await db["timer_feed"].delete_many({})  # as if merged by a leader that then crashed
    listener = CommandShapes(("timers", "timer_outcomes"))
    client = connect(MONGODB_URL, app_name="test-timers", listeners=[listener])
    ctx = _context(client[db.name], clock, "r")
    wheel = _wheel(ctx, Keeper(ctx))
    try:
        listener.on = True
        await wheel.start()  # its first tick takes the lease

        async def taken_over() -> Any:
            return wheel.stats["last_takeover"]

        await eventually(taken_over, timeout=10, what="take-over")
        assert wheel.stats["last_takeover"]["late_fired"] == 1
        assert wheel.stats["last_takeover"]["pending"] == 3
        assert set(wheel.index.due) == {"b-soon:no_show:v1", "b-far:no_show:v1"}
        assert wheel.armed == {"b-soon:no_show:v1"}
        takeover_scans = listener.scans()
        # the one read of all pending timers, less the resolved ones
        assert [q[:2] for q in takeover_scans] == [("find", "timer_outcomes"), ("find", "timers")]
        listener.seen.clear()
        clock.advance(timedelta(days=2) - timedelta(minutes=30))
        for _ in range(3):
            await wheel.tick()
        assert "b-far:no_show:v1" in wheel.armed  # entered the horizon: armed from memory
        clock.advance(timedelta(hours=1))
        await wheel.tick()
        far = await ctx.timers.get("b-far:no_show:v1")
        assert far is not None and far["status"] == "fired" and len(wheel.index) == 0
        assert listener.scans() == [] and listener.seen  # only _id lookups after the take-over
    finally:
        await wheel.stop()
        await client.close()


async def test_ticks_tidy_and_attendance_touch_the_timers_by_id_only(db: Any) -> None:
    """What runs per tick and per message never filters `timers` on anything but `_id`."""
    clock = FixedClock(NOW)
    listener = CommandShapes(("timers", "timer_outcomes"))
    client = connect(MONGODB_URL, app_name="test-timers", listeners=[listener])
    leader = _context(client[db.name], clock, "leader")
    other = _context(db, clock, "other")
    keeper = Keeper(leader)
    wheel = _wheel(leader, keeper)
    try:
        await wheel.tick()  # the take-over's scan happens before listening
        listener.on = True
        start = NOW + timedelta(minutes=5)
        for bid in ("b-cancel", "b-attend", "b-fire"):
            await _confirmed(other, bid, start)  # by the replica that does not lead: the feed
        appointment = {"start": start, "version": 2}
        await _request(other, "b-new", "confirmed", 2, appointment=appointment, appointment_cells=[])
        await keeper.tidy(await leader.requests.get("b-new"))  # arms v2's timers, cancels older ones
        await wheel.tick()
        await leader.requests.cancel("b-cancel", HW, {})
        await keeper.tidy(await leader.requests.get("b-cancel"))  # booking.cancelled
        await keeper.disarm_no_show("b-attend", reason="attended:joined")  # booking.attended
        clock.advance(timedelta(minutes=16))
        await wheel.tick()
        await keeper.sweep()
        outcomes = {d["_id"]: (d["outcome"], d.get("cancel_reason")) for d in await _outcomes(db)}
        assert outcomes["b-new:no_show:v2"] == ("fired", None)
        assert {k: v for k, v in outcomes.items() if not k.startswith("b-new")} == {
            "b-cancel:no_show:v1": ("cancelled", "cancelled"),
            "b-attend:no_show:v1": ("cancelled", "attended:joined"),
            "b-fire:no_show:v1": ("fired", None),
        }
        assert listener.scans() == []
        assert any(q == ("find", "timers", "id") for q in listener.seen)
        # nor updates it: on FerretDB even an update by _id costs ~1 s at 100,000 timers
        assert [q for q in listener.seen if q[:2] == ("update", "timers")] == []
    finally:
        await wheel.stop()
        await client.close()


async def _outcomes(db: Any) -> list[dict[str, Any]]:
    return await db["timer_outcomes"].find({}).to_list()


async def test_r05_a_hold_expiry_interrupted_before_its_effects_is_finished_by_the_sweep(db: Any) -> None:
    clock = FixedClock(NOW)
    ctx = _context(db, clock, "r")
    until = NOW + timedelta(minutes=1)
    await _request(ctx, "b-hold", "proposed", 2, proposal={"options": [], "hold_until": until})

    class Crashing(Keeper):
        async def after_hold_expired(self, timer: Any) -> None:
            raise RuntimeError("crashed after the firing, before its effects")

    await Keeper(ctx).tidy(await ctx.requests.get("b-hold"))  # arms the hold timer
    clock.advance(timedelta(minutes=2))
    timer = await ctx.timers.get("b-hold:hold:v2")
    with pytest.raises(RuntimeError):
        await Crashing(ctx).fire(timer)
    assert (await ctx.requests.get("b-hold") or {})["status"] == "proposed"
    assert await db["timer_effects"].count_documents({}) == 1
    await Keeper(ctx).sweep()
    assert (await ctx.requests.get("b-hold") or {})["status"] == "hold_expired"
    assert await db["timer_effects"].count_documents({}) == 0
    assert (await ctx.timers.get("b-hold:hold:v2") or {})["status"] == "fired"


async def test_two_replicas_loading_the_seed_counsellors_at_once_both_start(db: Any) -> None:
    """Issue 20: two scheduler replicas start at once and both load the seed counsellors; on FerretDB
    an upsert is a look then an insert, so one of two racing upserts of a new `_id` was refused
    (DuplicateKeyError) and that replica's start-up failed. Each counsellor is created once, and
    every racing load completes."""
    policies = Policies.load(ROOT / "deploy" / "offices", DEMO_OFFICES)
    counsellors = seed.read(ROOT / "deploy" / "counsellors.yaml")
    replicas = [
        connect(MONGODB_URL, app_name=f"scheduler-{i}") for i in range(4)
    ]  # each its own connections, as processes have
    try:
        stores = [CounsellorStore(r[db.name]) for r in replicas for _ in range(2)]
        reports = await asyncio.gather(*(seed.load(s, policies, counsellors, NOW) for s in stores))
    finally:
        for r in replicas:
            await r.close()
    loaded = {c for r in reports for c in r.created + r.updated}
    for c in loaded:
        assert sum(c in r.created for r in reports) <= 1, f"{c} created twice"
        assert all(c in r.created + r.updated for r in reports)
    assert {c["_id"] for c in await db["counsellors"].find({}, {"_id": 1}).to_list()} == loaded
