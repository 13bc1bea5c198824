"""Part 4, durable timers at volume: memory, re-arm time after a restart, firing lateness.

With the scheduler stopped, the bench writes N pending no-show timers into the scheduler's
`timers` collection in the shape `TimerStore.arm` writes them: most due days ahead (beyond the
wheel's horizon), `fire` of them due a few seconds after the restart, each with a confirmed
request so the keeper really emits `appointment.no_show`. Then it starts the scheduler and
measures: time to /readyz (the wheel takes the lease and arms the horizon before the service is
ready), resident memory, and lateness of the firings (the scheduler's own `lateness_seconds`,
and the bench's receive time of the event minus `due_at`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import env
from bench.results import Figure, Run, latency_ms, rate
from bench.services import Tap, pids, rss_of
from shared import outbox
from shared.mongo import connect

PART = "timers"
OFFICE = "kushiro-gyosei"
GRACE = 600.0


def timer_doc(i: int, due: datetime, now: datetime, prefix: str) -> dict[str, Any]:
    booking_id = f"{prefix}{i}"
    return {
        "_id": f"{booking_id}:no_show:1",
        "kind": "no_show",
        "booking_id": booking_id,
        "office_id": OFFICE,
        "version": 1,
        "due_at": due,
        "data": {"grace_seconds": GRACE, "start": due - timedelta(seconds=GRACE)},
        "correlation_id": str(uuid.uuid4()),
        "status": "pending",
        "armed_at": now,
        "effects_done": False,
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
        "updated_at": timer["armed_at"],
        "rev": 0,
        **outbox.new_document_fields([]),
    }


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
    rss_idle_after = rss_of(stack, "scheduler")
    say(f"timers: scheduler restarts in {empty_restart:.1f}s without timers; writing {n} pending timers")
    client = connect(env.MONGODB_URL, app_name="bench")
    db = client[f"{box.db_prefix}scheduler"]
    prefix = f"bench-{box.run_id}-"
    tap = Tap(box.amqp_url, keys=("appointment.no_show",))
    await tap.start()
    try:
        stack.stop("scheduler")
        now = datetime.now(UTC)
        lead = 2 * empty_restart + 10.0
        fire_from = now + timedelta(seconds=lead)
        docs = []
        for i in range(n):
            if i < fire:
                due = fire_from + timedelta(seconds=10.0 * i / max(fire, 1))
            else:
                due = now + timedelta(days=2, seconds=i * 3)
            docs.append(timer_doc(i, due, now, prefix))
        started = time.perf_counter()
        for i in range(0, n, 1000):
            await db["timers"].insert_many(docs[i : i + 1000], ordered=False)
        await db["requests"].insert_many([request_doc(d) for d in docs[:fire]], ordered=False)
        seeded = time.perf_counter() - started
        say(f"timers: {n} written in {seeded:.1f}s; restarting the scheduler")
        t0 = time.perf_counter()
        stack.start("scheduler")
        meter = env.CpuMeter(pids(stack)).start()
        await stack.wait_ready("scheduler", timeout=300)
        rearm = time.perf_counter() - t0
        rss_loaded = rss_of(stack, "scheduler")
        say(f"timers: ready in {rearm:.1f}s; waiting for {fire} firings")
        peak = rss_loaded or 0.0
        deadline = fire_from.timestamp() + 10.0 + max(60.0, fire * 0.5)
        while len(tap.seen) < fire and time.time() < deadline:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_of(stack, "scheduler") or 0.0)
        cpu = meter.stop()
    finally:
        await tap.stop()
        await client.close()
    measured = Measured(seeded, empty_restart, rearm, rss_idle_after or rss_idle, rss_loaded, peak, cpu)
    record(run_, n, fire, tap, measured)


@dataclass
class Measured:
    seeded: float
    empty_restart: float
    rearm: float
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
            f"scheduler start → /readyz with {n} pending timers (lease taken, due fired, horizon armed)",
            extra={"without_timers_s": round(m.empty_restart, 2)},
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
