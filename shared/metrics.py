"""Prometheus metrics of one service: FastStream's broker metrics plus the runtime's own.

FastStream's middleware counts messages received per queue and times handlers; the collectors here
add what only the runtime knows: how each delivery ended (handled, duplicate, retried, parked), the
messages the service published per exchange (its `EventPublisher` sends through aio-pika itself, so
FastStream's publish counters stay at zero) and the outbox backlog. Services register their own gauges on
`registry` (pending timers, emails sent, audit ingest lag).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from shared.messaging import Consumer
    from shared.store.outbox import OutboxRelay


class RuntimeCollector(Collector):
    """Reads the runtime's counters at scrape time, so the hot path only bumps integers.

    `relays` is the runtime's own list: relays added after this collector is registered are read too.
    """

    def __init__(self, service: str, inbox: str, consumer: Consumer, relays: Sequence[OutboxRelay]) -> None:
        self.service = service
        self.inbox = inbox
        self.consumer = consumer
        self.relays = relays

    def collect(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "consult_deliveries",
            "How deliveries to the service's inbox ended",
            labels=["service", "queue", "outcome"],
        )
        for outcome, n in self.consumer.stats.items():
            outcomes.add_metric([self.service, self.inbox, outcome], n)
        yield outcomes
        sent = CounterMetricFamily(
            "consult_published",
            "Messages the service published, confirmed by the broker, per exchange",
            labels=["service", "exchange"],
        )
        for exchange, n in self.consumer.publisher.published.items():
            sent.add_metric([self.service, exchange], n)
        yield sent
        published = CounterMetricFamily(
            "consult_outbox_published", "Events the outbox relays published", labels=["service", "collection"]
        )
        failures = CounterMetricFamily(
            "consult_outbox_relay_failures",
            "Relay passes paused by an error",
            labels=["service", "collection"],
        )
        backlog = GaugeMetricFamily(
            "consult_outbox_backlog",
            "Documents with unpublished events at the last check",
            labels=["service", "collection"],
        )
        scans = CounterMetricFamily(
            "consult_outbox_scans",
            "Whole passes over the pending events (a pass begun after a write has published it)",
            labels=["service", "collection"],
        )
        for relay in self.relays:
            labels = [self.service, relay.collection.name]
            published.add_metric(labels, relay.published)
            failures.add_metric(labels, relay.failures)
            backlog.add_metric(labels, relay.last_backlog)
            scans.add_metric(labels, relay.scans)
        yield published
        yield failures
        yield backlog
        yield scans


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def gauge_callback(
    registry: CollectorRegistry, name: str, doc: str, read: Callable[[], float], service: str
) -> None:
    """A gauge whose value is read at scrape time (e.g. pending timers counted by a background task)."""

    class _Gauge(Collector):
        def collect(self) -> Iterator[Metric]:
            g = GaugeMetricFamily(name, doc, labels=["service"])
            g.add_metric([service], read())
            yield g

    registry.register(_Gauge())
