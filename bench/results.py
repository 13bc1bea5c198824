"""Figures of one run: what was measured, against which baseline, and the parts that could not run."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    part: str
    name: str
    value: float
    unit: str
    meaning: str
    baseline: str | None = None  # key of the baseline figure ("part/name") this is compared with
    ratio: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.part}/{self.name}"


@dataclass
class Skipped:
    part: str
    reason: str


@dataclass
class Run:
    machine: dict[str, Any]
    options: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    profiles: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: MongoDB time of the services during the e2e part (`bench.stack.mongo_time`), largest first
    mongo_time: list[dict[str, Any]] = field(default_factory=list)
    #: load average (1, 5, 15 min) when each part started: other work on the machine skews figures
    loads: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, figure: Figure) -> Figure:
        if figure.baseline is not None:
            base = self.get(figure.baseline)
            if base is not None and base.value:
                figure.ratio = round(figure.value / base.value, 3)
        self.figures.append(figure)
        return figure

    def get(self, key: str) -> Figure | None:
        return next((f for f in self.figures if f.key == key), None)

    def mark(self, part: str) -> None:
        self.loads[part] = tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[assignment]

    def skip(self, part: str, reason: str) -> None:
        self.skipped.append(Skipped(part, reason))

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "options": self.options,
            "wall_seconds": round(time.perf_counter() - self.started, 1),
            "figures": [asdict(f) | {"key": f.key} for f in self.figures],
            "skipped": [asdict(s) for s in self.skipped],
            "load_average_at_part_start": self.loads,
            "profiles": self.profiles,
            "e2e_mongo_time": self.mongo_time,
        }


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def throughput(
    part: str,
    name: str,
    n: int,
    seconds: float,
    unit: str,
    *,
    meaning: str,
    baseline: str | None = None,
    counted: int | None = None,
    **extra: Any,
) -> Figure:
    """A rate figure: `n` things in `seconds` (both kept in `extra`, with any more details).
    `counted`: what the rate counts when it is not `n` (first delivery to last ack: `n - 1`)."""
    return Figure(
        part,
        name,
        rate(n if counted is None else counted, seconds),
        unit,
        meaning,
        baseline=baseline,
        extra={"n": n, "seconds": round(seconds, 3), **extra},
    )


def latency_ms(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 (and max) in milliseconds from samples in seconds."""
    if not samples:
        return {}
    ms = sorted(s * 1000 for s in samples)
    if len(ms) == 1:
        return {
            "p50": round(ms[0], 1),
            "p95": round(ms[0], 1),
            "p99": round(ms[0], 1),
            "max": round(ms[0], 1),
        }
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1), "max": round(ms[-1], 1)}
