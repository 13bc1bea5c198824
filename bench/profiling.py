"""Where the project's publish and consume paths spend their time (cProfile, stdlib).

The profiler runs in the event loop's thread, so it sees everything the loop does while enabled:
the code under test, the client libraries and asyncio itself. Self time is summed per package,
which says at a glance whether pydantic, FastStream, aio-pika, PyMongo or logging dominates.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import time
from collections import defaultdict
from typing import Any

from bench import env, layer
from bench.baseline import sample_event
from bench.results import Figure, Run, rate
from shared.events import BookingAttended, Envelope
from shared.runtime import Runtime

PART = "profile"
TOP = 12


def _package(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    if "/python3." in filename:
        tail = filename.split("/python3.", 1)[1].split("/", 2)
        return f"stdlib:{tail[1].removesuffix('.py')}" if len(tail) > 1 else "stdlib"
    root = str(env.ROOT) + "/"
    if filename.startswith(root):
        return filename[len(root) :]
    return filename


def summarise(profile: cProfile.Profile, messages: int) -> dict[str, Any]:
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1e-9
    by_package: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        by_package[_package(filename)] += tottime
        rows.append((tottime, cumtime, ncalls, f"{_package(filename)}:{line}:{func}"))
    rows.sort(reverse=True)
    by_cum = sorted(rows, key=lambda r: r[1], reverse=True)
    per_msg = 1e6 / messages
    return {
        "profiled_seconds": round(total, 3),
        "us_per_message": round(total * per_msg, 1),
        "self_time_by_package": [
            {"package": p, "share": round(t / total, 3), "us_per_message": round(t * per_msg, 1)}
            for p, t in sorted(by_package.items(), key=lambda kv: kv[1], reverse=True)[:TOP]
        ],
        "top_self_time": [
            {"function": name, "calls_per_message": round(n / messages, 2), "self_us": round(t * per_msg, 1)}
            for t, _c, n, name in rows[:TOP]
        ],
        "top_cumulative": [
            {"function": name, "calls_per_message": round(n / messages, 2), "cum_us": round(c * per_msg, 1)}
            for _t, c, n, name in by_cum[:TOP]
            if "asyncio" not in name and "<built-in" not in name
        ],
    }


class ProfiledHandler(layer.Clocked):
    """Starts the profiler at the first delivery, stops it at the last."""

    def __init__(self, expected: int, profile: cProfile.Profile) -> None:
        super().__init__(expected)
        self.profile = profile

    async def __call__(self, event: Envelope[Any]) -> None:
        if self.count == 0:
            self.profile.enable()
        await super().__call__(event)
        if self.count >= self.expected:
            self.profile.disable()


async def profile_publish(box: env.Sandbox, n: int) -> tuple[cProfile.Profile, float]:
    await layer.bind_sink(box.amqp_url)
    runtime = Runtime(layer.settings(box), layer.PUB)
    events = [sample_event(i) for i in range(n)]
    profile = cProfile.Profile()
    async with runtime.running():
        started = time.perf_counter()
        profile.enable()
        for e in events:
            await runtime.publisher.publish(e)
        profile.disable()
        seconds = time.perf_counter() - started
    await layer.delete_queue(box.amqp_url, layer.SINK)
    return profile, seconds


async def profile_consume(box: env.Sandbox, n: int) -> tuple[cProfile.Profile, float]:
    from shared import topology

    async with layer.channel(box.amqp_url) as ch:
        await topology.declare_service(ch, layer.SUB)
        await (await ch.get_queue(layer.SUB.inbox)).purge()
    await layer.prefill(box.amqp_url, [sample_event(i) for i in range(n)])
    runtime = Runtime(layer.settings(box), layer.SUB)
    profile = cProfile.Profile()
    handler = ProfiledHandler(n, profile)
    runtime.consumer.on(BookingAttended)(handler)
    async with runtime.running():
        await asyncio.wait_for(handler.done.wait(), 300)
    await layer.delete_queue(box.amqp_url, layer.SUB.inbox)
    return profile, handler.seconds


async def run(run_: Run, box: env.Sandbox, n: int) -> None:
    for name, fn, unit in (
        ("publish", profile_publish, "EventPublisher.publish one at a time"),
        ("consume", profile_consume, "Consumer with inbox dedupe"),
    ):
        profile, seconds = await fn(box, n)
        summary = summarise(profile, n)
        run_.profiles[name] = [summary]
        run_.add(
            Figure(
                PART,
                f"{name}_under_profiler",
                rate(n, seconds),
                "msg/s",
                f"{unit}, with cProfile on (slower than unprofiled; see the profile for the split)",
                extra={"n": n, "profiled_us_per_message": summary["us_per_message"]},
            )
        )
