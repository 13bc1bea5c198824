"""Thin subscribers of the notifier: every consumed event goes to the delivery service."""

from __future__ import annotations

from typing import Any

from services.notifier.delivery import DeliveryService
from shared.events import Envelope
from shared.runtime import Runtime


def register(runtime: Runtime, service: DeliveryService) -> None:
    async def deliver(event: Envelope[Any]) -> None:
        await service.handle(event)

    # The bindings of shared/topology.py NOTIFIER; anything else reaching the inbox is parked.
    for event_type in runtime.queues.events:
        runtime.consumer.on(event_type)(deliver)
