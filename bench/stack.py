"""The four services as real processes for the bench's parts 2–4, started like the e2e tests start
them, and what the parts read from them (metrics, a tap on the events exchange, process ids).

The stack lives in the bench's own vhost and database prefix. It reuses `tests/support/stack.py`
(`Stack`, `stack_env`), so settings the services gain for the e2e tests reach the bench too; what
only the bench needs (dev keys, counsellors, demo offices) is added here. A part whose service API
is not there yet is skipped with the reason, never faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import env
from shared import topology
from shared.settings import ServiceSettings

SERVICES = ("booking", "scheduler", "notifier", "audit")
OUTBOX_POLL_SECONDS = ServiceSettings.model_fields["outbox_poll_seconds"].default
PORTAL_KEY = "cpk_bench_portal_key_0123456789"
STAFF_KEY = "csk_bench_staff_key_0123456789"
AUDITOR_KEY = "bench-auditor.bench-auditor-secret-0123456789"


def bench_env(box: env.Sandbox) -> dict[str, str]:
    from tests.support.stack import stack_env

    extra = {
        "DEV_PORTAL_KEY": PORTAL_KEY,
        "DEV_STAFF_KEY": STAFF_KEY,
        "STAFF_API_KEY": STAFF_KEY,
        "AUDIT_BOOTSTRAP_AUDITOR_KEY": AUDITOR_KEY,
        "COUNSELLORS_FILE": str(env.ROOT / "deploy" / "counsellors.yaml"),
        "LOG_LEVEL": "WARNING",
    }
    demo = env.ROOT / "deploy" / "offices-demo"
    if demo.is_dir() and any(demo.glob("*.yaml")):
        extra["EXTRA_OFFICES_DIR"] = str(demo)
    base = stack_env(box.amqp_url, box.db_prefix)
    # what the e2e stack sets wins over the bench's guesses, except the bench's own credentials and
    # the log level: the bench measures the services, not their logging of each message
    keys = {k: extra.pop(k) for k in ("DEV_PORTAL_KEY", "DEV_STAFF_KEY", "AUDIT_BOOTSTRAP_AUDITOR_KEY")}
    # the relays poll at the production default, not the tests' 0.2 s: the bench measures what runs
    production = {"OUTBOX_POLL_SECONDS": str(OUTBOX_POLL_SECONDS)}
    return {**extra, **base, **keys, **production, "LOG_LEVEL": "WARNING"}


@asynccontextmanager
async def running_stack(box: env.Sandbox, say: Callable[[str], None]) -> AsyncIterator[Any]:
    from tests.support import free_port
    from tests.support.stack import Stack

    stack = Stack(amqp_url=box.amqp_url, db_prefix=box.db_prefix, env=bench_env(box))
    log_dir = env.ROOT / ".local" / "logs" / f"bench-{box.run_id}"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for service in SERVICES:
        stack.urls[service] = f"http://127.0.0.1:{free_port()}"
        stack.logs[service] = log_dir / f"{service}.log"
        stack.start(service)
    try:
        await asyncio.gather(*(stack.wait_ready(s, timeout=90) for s in SERVICES))
        say(f"stack ready in {time.perf_counter() - started:.1f}s (logs in {log_dir.relative_to(env.ROOT)})")
        yield stack
    finally:
        for service in list(stack.procs):
            stack.stop(service)


# --------------------------------------------------------------------------- shared helpers


async def counter(url: str, name: str, labels: dict[str, str] | None = None) -> dict[str, float]:
    """Samples of a Prometheus counter by its `outcome` label (or the whole label set)."""
    async with httpx.AsyncClient(timeout=10) as c:
        text = (await c.get(f"{url}/metrics/")).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name not in (name, f"{name}_total"):
                continue
            if labels and any(s.labels.get(k) != v for k, v in labels.items()):
                continue
            key = s.labels.get("outcome") or json.dumps(s.labels, sort_keys=True)
            out[key] = out.get(key, 0.0) + s.value
    return out


@dataclass
class Tap:
    """A queue of the bench's own bound to the events exchange: what crossed the system, and when."""

    amqp_url: str
    keys: tuple[str, ...] = ("#",)
    seen: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _conn: Any = None

    async def start(self) -> None:
        self._conn = await aio_pika.connect(self.amqp_url)
        ch = await self._conn.channel()
        await ch.set_qos(prefetch_count=500)
        await topology.declare_exchanges(ch)
        q = await ch.declare_queue("", exclusive=True, auto_delete=True)
        for key in self.keys:
            await q.bind(topology.EVENTS, routing_key=key)

        async def on(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            with contextlib.suppress(ValueError):
                self.seen.append((time.time(), json.loads(msg.body)))
            await msg.ack()

        await q.consume(on)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def of(self, booking_id: str) -> list[str]:
        return [
            e.get("type", "?")
            for _, e in self.seen
            if (e.get("payload") or {}).get("booking_id") == booking_id
        ]


def pids(stack: Any) -> dict[str, int]:
    return {name: proc.pid for name, proc in stack.procs.items()}


def rss_of(stack: Any, service: str) -> float | None:
    proc = stack.procs.get(service)
    return env.rss_mib(proc.pid) if proc is not None else None


async def histogram(url: str, name: str) -> tuple[list[tuple[float, float]], float]:
    """A Prometheus histogram's cumulative buckets (upper bound, count) and its total count."""
    async with httpx.AsyncClient(timeout=10) as c:
        text = (await c.get(f"{url}/metrics/")).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for s in family.samples:
            if s.name == f"{name}_bucket":
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
    ordered = sorted(buckets.items())
    return ordered, (ordered[-1][1] if ordered else 0.0)


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile of cumulative buckets, interpolated inside its bucket (as PromQL's
    histogram_quantile); None without observations."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


async def mongo_time(stack: Any, top: int = 15) -> list[dict[str, Any]]:
    """Where the services spent their MongoDB time: `consult_mongo_command_seconds` of each service,
    summed per service, command, collection and filter shape, largest total first."""
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=10) as c:
        for service in SERVICES:
            text = (await c.get(f"{stack.urls[service]}/metrics/")).text
            sums: dict[tuple[str, str, str], list[float]] = {}
            for family in text_string_to_metric_families(text):
                if family.name != "consult_mongo_command_seconds":
                    continue
                for s in family.samples:
                    key = (s.labels["command"], s.labels["collection"], s.labels["shape"])
                    if s.name.endswith("_sum"):
                        sums.setdefault(key, [0.0, 0.0])[0] += s.value
                    elif s.name.endswith("_count"):
                        sums.setdefault(key, [0.0, 0.0])[1] += s.value
            for (command, collection, shape), (total, count) in sums.items():
                rows.append(
                    {
                        "service": service,
                        "command": command,
                        "collection": collection,
                        "shape": shape,
                        "seconds": round(total, 3),
                        "calls": int(count),
                        "mean_ms": round(1000 * total / count, 2) if count else 0.0,
                    }
                )
    rows.sort(key=lambda r: r["seconds"], reverse=True)
    return rows[:top]
