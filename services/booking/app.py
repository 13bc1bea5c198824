"""Wiring of the booking service: broker, store, handlers, HTTP routes."""

from __future__ import annotations

from fastapi import FastAPI

from services.booking import api, handlers
from services.booking.config import Settings
from services.booking.store import BookingStore
from shared import topology
from shared.clock import Clock
from shared.runtime import Runtime


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(settings, topology.BOOKING, clock=clock)
    store = BookingStore(runtime.db)
    store.on_write = runtime.relay(store.bookings).poke
    runtime.on_startup(store.ensure_indexes)
    handlers.register(runtime, store)
    app = runtime.http_app(title="Booking service", description="Portal intake and the life of a booking")
    app.include_router(api.router(runtime, store))
    return app
