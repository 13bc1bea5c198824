"""Part 4, durable timers at volume: memory, re-arm time after a restart, firing lateness.

With the scheduler stopped, the bench writes N pending no-show timers into the scheduler's
`timers` collection in the shape `TimerStore.arm` writes them: most due days ahead (beyond the
wheel's horizon), `fire` of them due a few seconds after the restart, each with a confirmed
request so the keeper really emits `appointment.no_show`. Then it starts the scheduler and
measures: time to /readyz, time to the wheel's take-over (readiness does not wait for it: the
wheel takes the lease on its first tick, reads the pending timers once, fires what is due and arms
the horizon; the scheduler reports it on `/v1/staff/timers/lease`), resident memory, and lateness
of the firings (the scheduler's own `lateness_seconds`, and the bench's receive time of the event
minus `due_at`). The far timers are written first and the due ones last, so "due 0–10 s after the
restart" holds however long the writing takes.
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
from shared.mongo import connect
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
        started = time.perf_counter()
        far = [timer_doc(i, now + timedelta(days=2, seconds=i * 3), now, prefix) for i in range(fire, n)]
        for i in range(0, len(far), 1000):
            await db["timers"].insert_many(far[i : i + 1000], ordered=False)
        lead = 2 * empty_restart + 10.0
        now = datetime.now(UTC)
        fire_from = now + timedelta(seconds=lead)
        due = [
            timer_doc(i, fire_from + timedelta(seconds=10.0 * i / max(fire, 1)), now, prefix)
            for i in range(fire)
        ]
        if due:
            await db["timers"].insert_many(due, ordered=False)
            await db["requests"].insert_many([request_doc(d) for d in due], ordered=False)
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
    finally:
        await tap.stop()
        await client.close()
    measured = Measured(
        seeded, empty_restart, rearm, took, takeover, rss_idle_after or rss_idle, rss_loaded, peak, cpu
    )
    record(run_, n, fire, tap, measured)


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
            f"scheduler start → the wheel has read the {n} pending timers, fired the due, armed the horizon",
            extra={"wheel": m.wheel},
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
