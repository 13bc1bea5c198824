"""Part 4, durable timers at volume: memory, take-over time after a restart, firing lateness.

With the scheduler stopped, the bench writes N pending no-show timers into the scheduler's
`timers` collection in the shape `TimerStore.arm` writes them, each with its due marker in the
bucket of its JST day (`timer_due`; no feed entries: the feed is what a live leader drains every
tick, and a take-over after a crash finds it nearly empty): most due days ahead (beyond the wheel's
horizon, three seconds apart), `fire` of them due a few seconds after the restart, each with a
confirmed request so the keeper really emits `appointment.no_show`. Then it starts the scheduler
and measures: time to /readyz, time to the wheel's take-over (readiness does not wait for it: the
wheel takes the lease on its first tick, reads the due markers of the days from the watermark to
the horizon, fires what is due and arms the horizon; the scheduler reports it on
`/v1/staff/timers/lease`), resident memory, and lateness of the firings (the scheduler's own
`lateness_seconds`, and the bench's receive time of the event minus `due_at`). The far timers are
written first and the due ones last, so "due 0–10 s after the restart" holds however long the
writing takes. Then it grows the pending timers to ten times N (1,000,000 by default) and restarts
once more: time to /readyz, to the take-over, and resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench import env
from bench.results import Figure, Run, latency_ms, rate
from bench.stack import Tap, pids, rss_of
from shared.mongo import Doc, connect
from shared.store import outbox

PART = "timers"
OFFICE = "kushiro-gyosei"
GRACE = 600.0


def timer_doc(i: int, due: datetime, now: datetime, prefix: str) -> dict[str, Any]:
    booking_id = f"{prefix}{i}"
    return {
        "_id": f"{booking_id}:no_show:v1",  # TimerSpec.timer_id
        "kind": "no_show",
        "booking_id": booking_id,
        "office_id": OFFICE,
        "version": 1,
        "due_at": due,
        "data": {"grace_seconds": GRACE, "start": due - timedelta(seconds=GRACE)},
        "correlation_id": str(uuid.uuid4()),
        "status": "pending",
        "armed_at": now,
        **outbox.new_document_fields([]),
    }


def request_doc(timer: dict[str, Any]) -> dict[str, Any]:
    """A confirmed request the timer still belongs to (what the keeper checks before firing)."""
    return {
        "_id": timer["booking_id"],
        "office_id": OFFICE,
        "status": "confirmed",
        "version": 1,
        "correlation_id": timer["correlation_id"],
        # the appointment the timer was armed for (without it the keeper cancels the timer as stale)
        "appointment": {"start": timer["data"]["start"], "version": 1},
        "updated_at": timer["armed_at"],
        "rev": 0,
        **outbox.new_document_fields([]),
    }


async def write_timers(db: Any, docs: list[dict[str, Any]], now: datetime) -> None:
    """The timers and their due markers, as `TimerStore.arm` leaves them (the marker first)."""
    from services.scheduler.store.timers import WHEEL, TimerStore, due_day

    buckets = await TimerStore(db).due_buckets()
    for i in range(0, len(docs), 1000):
        chunk = docs[i : i + 1000]
        by_day: dict[Any, list[Doc]] = {}
        for d in chunk:
            by_day.setdefault(due_day(d["due_at"], now), []).append({"_id": d["_id"], "due_at": d["due_at"]})
        for day, markers in by_day.items():
            await buckets.add_many(WHEEL, day, markers)
        await db["timers"].insert_many(chunk, ordered=False)


async def restart(stack: Any, timeout: float) -> float:
    stack.stop("scheduler")
    started = time.perf_counter()
    stack.start("scheduler")
    await stack.wait_ready("scheduler", timeout=timeout)
    return time.perf_counter() - started


async def run(run_: Run, stack: Any, box: env.Sandbox, opts: Any, say: Callable[[str], None]) -> None:
    try:
        from services.scheduler.store.timers import PENDING, TimerStore  # noqa: F401
    except ImportError as exc:
        run_.skip(PART, f"the scheduler's timer store is not there: {exc}")
        return
    n, fire = opts.timers, min(opts.timer_fire, opts.timers)
    rss_idle = rss_of(stack, "scheduler")
    empty_restart = await restart(stack, 90)
    await taken_over(stack, timeout=60)  # on an empty database: the markers' backfill is recorded
    rss_idle_after = rss_of(stack, "scheduler")
    say(f"timers: scheduler restarts in {empty_restart:.1f}s without timers; writing {n} pending timers")
    client = connect(env.MONGODB_URL, app_name="bench")
    db = client[f"{box.db_prefix}scheduler"]
    prefix = f"bench-{box.run_id}-"
    tap = Tap(box.amqp_url, keys=("appointment.no_show",))
    await tap.start()
    try:
        stack.stop("scheduler")
        started = time.perf_counter()
        fire_from = await seed(db, n, fire, prefix, lead=2 * empty_restart + 10.0)
        seeded = time.perf_counter() - started
        say(f"timers: {n} written in {seeded:.1f}s; restarting the scheduler")
        t0 = time.perf_counter()
        stack.start("scheduler")
        meter = env.CpuMeter(pids(stack)).start()
        await stack.wait_ready("scheduler", timeout=300)
        rearm = time.perf_counter() - t0
        takeover = await taken_over(stack, timeout=300)
        took = time.perf_counter() - t0
        rss_loaded = rss_of(stack, "scheduler")
        say(
            f"timers: ready in {rearm:.1f}s, taken over in {took:.1f}s ({takeover}); "
            f"waiting for {fire} firings"
        )
        peak = rss_loaded or 0.0
        deadline = fire_from.timestamp() + 10.0 + max(60.0, fire * 0.5)
        while len(tap.seen) < fire and time.time() < deadline:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_of(stack, "scheduler") or 0.0)
        cpu = meter.stop()
        large = getattr(opts, "timers_large", None) or 10 * n
        say(f"timers: growing to {large} pending timers")
        grown = await grow(stack, db, n, large, prefix)
    finally:
        await tap.stop()
        await client.close()
    measured = Measured(
        seeded, empty_restart, rearm, took, takeover, rss_idle_after or rss_idle, rss_loaded, peak, cpu
    )
    record(run_, n, fire, tap, measured)
    record_large(run_, large, grown)


async def seed(db: Any, n: int, fire: int, prefix: str, *, lead: float) -> datetime:
    """The far timers, then `fire` due from `lead` seconds after the writing on; when they start."""
    now = datetime.now(UTC)
    await write_timers(db, far_timers(fire, n, now, prefix), now)
    now = datetime.now(UTC)
    fire_from = now + timedelta(seconds=lead)
    due = [
        timer_doc(i, fire_from + timedelta(seconds=10.0 * i / max(fire, 1)), now, prefix) for i in range(fire)
    ]
    if due:
        await db["requests"].insert_many([request_doc(d) for d in due], ordered=False)
        await write_timers(db, due, now)
    return fire_from


def far_timers(first: int, end: int, now: datetime, prefix: str) -> list[dict[str, Any]]:
    """Timers due from two days ahead on, three seconds apart (28,800 a day)."""
    return [timer_doc(i, now + timedelta(days=2, seconds=i * 3), now, prefix) for i in range(first, end)]


async def grow(stack: Any, db: Any, n: int, large: int, prefix: str) -> dict[str, Any]:
    """Up to `large` pending timers (scheduler stopped), then one restart: ready, take-over, memory."""
    stack.stop("scheduler")
    started = time.perf_counter()
    now = datetime.now(UTC)
    for i in range(n, large, 100_000):
        await write_timers(db, far_timers(i, min(i + 100_000, large), now, prefix), now)
    seeded = time.perf_counter() - started
    t0 = time.perf_counter()
    stack.start("scheduler")
    await stack.wait_ready("scheduler", timeout=300)
    ready = time.perf_counter() - t0
    wheel = await taken_over(stack, timeout=300)
    took = time.perf_counter() - t0
    return {
        "seeded": seeded,
        "ready": ready,
        "takeover": took,
        "wheel": wheel,
        "rss": rss_of(stack, "scheduler"),
    }


def record_large(run_: Run, large: int, m: dict[str, Any]) -> None:
    run_.add(
        Figure(
            PART,
            "restart_ready_large_s",
            round(m["ready"], 2),
            "s",
            f"scheduler start → /readyz with {large} pending timers",
            extra={"seeded_s": round(m["seeded"], 1)},
        )
    )
    run_.add(
        Figure(
            PART,
            "takeover_large_s",
            round(m["takeover"], 2),
            "s",
            f"scheduler start → the wheel has taken over {large} pending timers",
            extra={"wheel": m["wheel"]},
        )
    )
    run_.add(
        Figure(
            PART,
            "rss_large_mib",
            m["rss"] or 0.0,
            "MiB",
            f"scheduler resident memory right after the take-over with {large} pending timers",
        )
    )


async def taken_over(stack: Any, timeout: float) -> dict[str, Any]:
    """The wheel's own account of its take-over, once it has happened (`stats.last_takeover`)."""
    key = stack.env.get("STAFF_API_KEY", "")
    headers = {"X-Staff-Key": key}
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=stack.urls["scheduler"], timeout=5, headers=headers) as c:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                r = await c.get("/v1/staff/timers/lease")
                r.raise_for_status()
                last = (r.json().get("stats") or {}).get("last_takeover")
                if last:
                    return dict(last)
            await asyncio.sleep(0.1)
    raise TimeoutError(f"the scheduler did not take the timers over within {timeout:.0f}s")


@dataclass
class Measured:
    seeded: float
    empty_restart: float
    rearm: float
    takeover: float
    wheel: dict[str, Any]
    rss_idle: float | None
    rss_loaded: float | None
    peak: float
    cpu: dict[str, float]


def record(run_: Run, n: int, fire: int, tap: Tap, m: Measured) -> None:
    reported, observed = [], []
    for received, event in tap.seen:
        payload = event.get("payload") or {}
        if "lateness_seconds" in payload:
            reported.append(float(payload["lateness_seconds"]))
        if payload.get("due_at"):
            due = datetime.fromisoformat(str(payload["due_at"]).replace("Z", "+00:00")).timestamp()
            observed.append(max(received - due, 0.0))
    run_.add(
        Figure(
            PART,
            "seed_rate",
            rate(n, m.seeded),
            "timer/s",
            f"{n} timer documents written with insert_many (bench, scheduler stopped)",
            baseline="baseline/mongo_insert_many",
            extra={"n": n, "seconds": round(m.seeded, 3)},
        )
    )
    run_.add(
        Figure(
            PART,
            "restart_ready_s",
            round(m.rearm, 2),
            "s",
            f"scheduler start → /readyz with {n} pending timers (readiness does not wait for the timers)",
            extra={"without_timers_s": round(m.empty_restart, 2)},
        )
    )
    run_.add(
        Figure(
            PART,
            "takeover_s",
            round(m.takeover, 2),
            "s",
            f"scheduler start → the wheel has taken over {n} pending timers (its days' markers read)",
            extra={"wheel": m.wheel},
        )
    )
    run_.add(
        Figure(
            PART,
            "takeover_wheel_s",
            float(m.wheel.get("seconds", 0.0)),
            "s",
            f"the wheel's own take-over, {n} pending: lease taken → markers read, due fired, horizon armed",
            extra={"read_s": m.wheel.get("scan_seconds")},
        )
    )
    run_.add(
        Figure(
            PART,
            "rss_mib",
            m.rss_loaded or 0.0,
            "MiB",
            f"scheduler resident memory right after the restart with {n} pending timers",
            extra={"idle_mib": m.rss_idle, "peak_while_firing_mib": m.peak},
        )
    )
    run_.add(
        Figure(
            PART,
            "fired",
            float(len(tap.seen)),
            "events",
            f"appointment.no_show received of {fire} timers due 0–10 s after the restart",
            extra={
                "expected": fire,
                "latency_ms": latency_ms(observed),
                "reported_lateness_ms": latency_ms(reported),
                "cpu_cores_by_process": m.cpu,
            },
        )
    )
