"""The scheduler's Prometheus metrics, read at scrape time from counters the code already keeps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.scheduler.coordinator import Coordinator
from services.scheduler.wheel import TimerWheel


class SchedulerMetrics(Collector):
    def __init__(self, registry: CollectorRegistry, coordinator: Coordinator, wheel: TimerWheel) -> None:
        self.coordinator, self.wheel = coordinator, wheel
        self.fired: Counter[str] = Counter()
        self.lateness = Histogram(
            "consult_scheduler_timer_lateness_seconds",
            "How late timers fired (after a restart or a take-over: the downtime)",
            ["kind"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 15, 60, 300, 3600),
            registry=registry,
        )
        registry.register(self)

    def timer_fired(self, kind: str, lateness: float) -> None:
        self.fired[kind] += 1
        self.lateness.labels(kind=kind).observe(lateness)

    def collect(self) -> Iterator[Metric]:
        leader = GaugeMetricFamily("consult_scheduler_timer_leader", "1 while this replica runs the timers")
        leader.add_metric([], 1.0 if self.wheel.leader else 0.0)
        yield leader
        armed = GaugeMetricFamily("consult_scheduler_timers_armed", "Timers armed in APScheduler here")
        armed.add_metric([], float(len(self.wheel.armed)))
        yield armed
        pending = GaugeMetricFamily(
            "consult_scheduler_timers_pending",
            "Pending timers the leader holds in memory: those of the days up to the horizon's end "
            "(0 elsewhere; read from the due markers, then the feed; a timer another replica "
            "cancelled counts until its due time)",
        )
        pending.add_metric([], float(len(self.wheel.index)))
        yield pending
        fired = CounterMetricFamily(
            "consult_scheduler_timers_fired", "Timers fired by this replica", labels=["kind"]
        )
        for kind, n in self.fired.items():
            fired.add_metric([kind], n)
        yield fired
        placed = CounterMetricFamily(
            "consult_scheduler_requests", "Requests placed, by outcome", labels=["outcome"]
        )
        for outcome, n in self.coordinator.stats.items():
            placed.add_metric([outcome], n)
        yield placed
        conflicts = CounterMetricFamily(
            "consult_scheduler_reservation_conflicts", "Reservations the unique index refused (lost races)"
        )
        conflicts.add_metric([], self.coordinator.ctx.reservations.conflicts)
        yield conflicts
