"""Wiring of the notifier service."""

from __future__ import annotations

from fastapi import FastAPI

from services.notifier import handlers
from services.notifier.config import Settings
from shared import topology
from shared.clock import Clock
from shared.runtime import Runtime


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(settings, topology.NOTIFIER, clock=clock)
    handlers.register(runtime)
    return runtime.http_app(title="Notifier service")
