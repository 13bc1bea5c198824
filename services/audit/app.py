"""Wiring of the audit service."""

from __future__ import annotations

from fastapi import FastAPI

from services.audit import api, auth, disclosure_api, handlers
from services.audit.config import Settings
from services.audit.disclosure import Refused
from services.audit.service import AuditService
from shared import parking, topology
from shared.acting import OPERATOR
from shared.clock import Clock
from shared.runtime import Runtime


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(settings, topology.AUDIT, clock=clock, parser=handlers.parse_any)
    runtime.consumer.inbox = None  # the records' unique event id is the dedupe; no second lookup per message
    service = AuditService(runtime, settings)
    runtime.on_startup(service.start)
    runtime.on_shutdown(service.stop)
    handlers.register(runtime.consumer, service)
    app = runtime.http_app(
        title="Audit service",
        description="Tamper-evident, pseudonymised access and device logs (R10-R12), for auditors only",
    )
    app.include_router(api.router(service))
    app.include_router(disclosure_api.router(service))
    operator = auth.requires(service.store, OPERATOR)
    app.include_router(parking.ops_router(settings.amqp_url, runtime.queues, operator))
    app.add_exception_handler(Refused, disclosure_api.refused)
    app.state.audit = service
    return app
