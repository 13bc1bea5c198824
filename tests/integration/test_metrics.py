"""Every service exposes Prometheus metrics: broker traffic, delivery outcomes, outbox backlog."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared import topology
from shared.events import BookingAttended, Envelope
from shared.runtime import Runtime
from shared.settings import ServiceSettings
from tests.support import eventually, serve

QUEUES = topology.ServiceQueues("metered", events=("booking.attended",))


async def test_metrics_endpoint_counts_deliveries_and_broker_traffic(
    make_settings: Callable[..., ServiceSettings],
) -> None:
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)

    @runtime.consumer.on(BookingAttended)
    async def handle(event: Envelope[Any]) -> None:
        return None

    app = runtime.http_app(title="metered")
    async with serve(app) as client:
        event = runtime.event(
            BookingAttended(booking_id="m1", how="joined", at=runtime.clock.now()), "office-x"
        )
        await runtime.publisher.publish(event)
        await runtime.publisher.publish(event)  # a duplicate

        async def counted() -> bool:
            return runtime.consumer.stats["duplicates"] == 1 and runtime.consumer.stats["handled"] == 1

        await eventually(counted, what="one handled, one duplicate")
        text = (await client.get("/metrics/")).text
    assert 'consult_deliveries_total{outcome="handled",queue="metered.inbox",service="metered"} 1.0' in text
    assert (
        'consult_deliveries_total{outcome="duplicates",queue="metered.inbox",service="metered"} 1.0' in text
    )
    assert "faststream_received_messages_total" in text
    # the two publishes, counted by the publisher (it sends through aio-pika, not FastStream's publish)
    assert 'consult_published_total{exchange="consult.events",service="metered"} 2.0' in text
    assert "consult_outbox_backlog" in text


async def test_readiness_is_a_metric_as_the_last_readyz_found_it(
    make_settings: Callable[..., ServiceSettings],
) -> None:
    """`consult_ready` (deploy/observability/alerts.yml, ServiceNotReady) follows /readyz: nothing before
    the first probe, then each check and the whole as the probe found them."""
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    app = runtime.http_app(title="metered")
    async with serve(app) as client:
        assert "consult_ready{" not in (await client.get("/metrics/")).text
        assert (await client.get("/readyz")).status_code == 200
        text = (await client.get("/metrics/")).text
        runtime.started = False  # as during shutdown: /readyz answers 503
        assert (await client.get("/readyz")).status_code == 503
        after = (await client.get("/metrics/")).text
    for check in ("broker", "database", "started", "ready"):
        assert f'consult_ready{{check="{check}",service="metered"}} 1.0' in text
    assert 'consult_ready{check="started",service="metered"} 0.0' in after
    assert 'consult_ready{check="ready",service="metered"} 0.0' in after
    assert 'consult_ready{check="broker",service="metered"} 1.0' in after
