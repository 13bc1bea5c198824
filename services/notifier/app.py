"""Wiring of the notifier service: runtime, delivery service, handlers, HTTP app."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifier import handlers
from services.notifier.config import Settings
from services.notifier.delivery import DeliveryService
from services.notifier.keys import OpsKeyStore, operator_auth
from shared import parking, topology
from shared.clock import Clock
from shared.runtime import Runtime


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    queues: topology.ServiceQueues = topology.NOTIFIER,
) -> FastAPI:
    """`queues` is for tests that need shorter retry delays than production's."""
    settings = settings or Settings()
    runtime = Runtime(settings, queues, clock=clock)
    # Deduplication is the delivery record's job (keyed by notice, not by event id, so it also stops a
    # re-emitted event); the generic inbox would only add two FerretDB round trips per message.
    runtime.consumer.inbox = None
    service = DeliveryService(runtime, settings)
    handlers.register(runtime.consumer, service)
    app = runtime.http_app(title="Notifier service")
    ops_keys = OpsKeyStore(runtime.db)
    app.include_router(parking.ops_router(settings.amqp_url, runtime.queues, operator_auth(ops_keys)))
    app.state.delivery = service
    return app
