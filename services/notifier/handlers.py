"""Thin subscribers of the notifier: every consumed event goes to the delivery service."""

from __future__ import annotations

from typing import Any

from services.notifier.delivery import DeliveryService
from services.notifier.domain import NOTICE_EVENTS
from shared.events import Envelope
from shared.messaging import Consumer


def register(consumer: Consumer, service: DeliveryService) -> None:
    async def deliver(event: Envelope[Any]) -> None:
        await service.handle(event)

    # The bindings of shared/topology.py NOTIFIER; anything else reaching the inbox is parked.
    consumer.on(*NOTICE_EVENTS)(deliver)
