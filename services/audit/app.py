"""Wiring of the audit service."""

from __future__ import annotations

from fastapi import FastAPI

from services.audit import api, handlers
from services.audit.config import Settings
from services.audit.store import AuditStore
from shared import topology
from shared.clock import Clock
from shared.runtime import Runtime


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(settings, topology.AUDIT, clock=clock)
    store = AuditStore(runtime.db)
    runtime.on_startup(store.ensure_indexes)
    handlers.register(runtime, store)
    app = runtime.http_app(title="Audit service")
    app.include_router(api.router(store))
    return app
