"""Part 3, audit ingest: how many events per second the audit service records.

The bench publishes events that only audit consumes (access.logged, notification.sent,
device.recorded: no other service binds them), as fast as confirms allow, and reads audit's own
delivery counter (`consult_deliveries{outcome}` on /metrics) until every event is accounted for.
Events/s = events / (time from the first publish to the last one recorded). The publisher is
faster than audit, so the inbox backs up and the figure is audit's ingest rate.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika

from bench import env
from bench.baseline import publish_pipelined, raw_message
from bench.results import Run, throughput
from bench.stack import counter, pids
from examples import records
from shared import topology
from shared.clock import SystemClock
from shared.events import DeviceRecorded, Envelope, NotificationSent, Payload, new_event

PART = "audit"


def audit_events(n: int) -> list[Envelope[Any]]:
    clock = SystemClock()
    out: list[Envelope[Any]] = []
    for i in range(n):
        booking_id = f"bench-{uuid.uuid4().hex[:12]}"
        payload: Payload
        if i % 3 == 0:
            payload = records.access_logged(at=clock.now(), actor="portal:bench")
        elif i % 3 == 1:
            payload = NotificationSent(
                booking_id=booking_id,
                kind="confirmation",
                delivery_key=uuid.uuid4().hex,
                message_id=f"<{i}@bench>",
            )
        else:
            payload = DeviceRecorded(
                booking_id=booking_id,
                portal_id="bench",
                user_agent="Mozilla/5.0 (bench)",
                ip_address=f"192.0.2.{i % 250 + 1}",
                device_id=uuid.uuid4().hex,
                observed_at=clock.now(),
            )
        out.append(new_event(payload, office_id="kushiro-gyosei", producer="bench", clock=clock))
    return out


def settled(counts: dict[str, float]) -> float:
    return sum(counts.get(k, 0.0) for k in ("handled", "duplicates", "parked"))


async def run(run_: Run, stack: Any, box: env.Sandbox, opts: Any, say: Callable[[str], None]) -> None:
    audit_url = stack.urls["audit"]
    n = opts.audit_events
    try:
        before = await counter(audit_url, "consult_deliveries")
    except Exception as exc:
        run_.skip(PART, f"audit /metrics unreadable: {exc}")
        return
    say(f"audit: {n} events published to consult.events, counted on audit's /metrics")
    events = audit_events(n)
    conn = await aio_pika.connect(box.amqp_url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        ex = await ch.get_exchange(topology.EVENTS)

        async def publish(e: Envelope[Any]) -> None:
            await ex.publish(raw_message(e), routing_key=e.type, mandatory=True)

        meter = env.CpuMeter(pids(stack)).start()
        started = time.perf_counter()
        published = await publish_pipelined(publish, events, 100)
    target = settled(before) + n
    deadline = time.perf_counter() + max(120.0, n / 20)
    counts = before
    while time.perf_counter() < deadline:
        counts = await counter(audit_url, "consult_deliveries")
        if settled(counts) >= target:
            break
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    cpu = meter.stop()
    done = settled(counts) - settled(before)
    parked = counts.get("parked", 0.0) - before.get("parked", 0.0)
    if done < n:
        run_.skip(PART, f"audit recorded only {done:.0f} of {n} events in {seconds:.0f}s")
        return
    run_.add(
        throughput(
            PART,
            "ingest",
            n,
            seconds,
            "event/s",
            meaning="audit service recording events from its inbox (mix of access.logged, notification.sent, "
            "device.recorded), first publish to last recorded",
            baseline="baseline/amqp_consume",
            publish_seconds=round(published, 3),
            parked=parked,
            handled=counts.get("handled", 0.0) - before.get("handled", 0.0),
            cpu_cores_by_process=cpu,
        )
    )
    if parked:
        run_.skip(
            f"{PART} (warning)", f"audit parked {parked:.0f} of the bench's events; see its parking queue"
        )
