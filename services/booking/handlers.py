"""Thin subscribers of the booking service: parse, call the domain, done."""

from __future__ import annotations

from typing import Any

from services.booking.store import BookingStore
from shared.events import Envelope
from shared.runtime import Runtime


def register(runtime: Runtime, store: BookingStore) -> None:
    @runtime.consumer.on("appointment.confirmed")
    async def appointment_confirmed(event: Envelope[Any]) -> None:
        runtime.log.info("appointment confirmed for %s", event.payload.booking_id)
