"""Wiring of the booking service: broker, stores, handlers, HTTP routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.booking import api, guard, handlers, staff_api
from services.booking.auth import authenticator, operator
from services.booking.config import Settings
from services.booking.domain import IllegalTransition, InvalidFields, RuleViolation
from services.booking.intake import Intake, invalid
from services.booking.service import BookingService, NotFound
from services.booking.store import Stores
from shared import parking, topology
from shared.clock import Clock
from shared.messaging import TransientError
from shared.runtime import Runtime

log = logging.getLogger("consult.booking")
DEV_PORTAL = "dev-portal"
DEV_STAFF = "dev-staff"


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    vault = settings.vault()
    runtime = Runtime(
        settings,
        topology.BOOKING,
        clock=clock,
        # intake commands and appointment events share the inbox: dispatch on the message type
        parser=lambda body, msg: handlers.parse_message(body, msg.raw_message.exchange),
        # R12: outbox events and parked copies sealed with the keys of the person's fields
        sealer=vault,
    )
    stores = Stores.open(runtime.db, vault)
    for versions in (stores.bookings.versions, stores.people.versions):
        versions.on_write = runtime.marked_relay(versions.changes).poke
    stores.requests.on_write = runtime.marked_relay(stores.requests.collection).poke
    stores.devices.on_write = runtime.relay(stores.devices.collection, delete_sent=True).poke
    service = BookingService(runtime.producer, stores, settings.policies())
    intake = Intake(service, settings)
    runtime.on_startup(stores.ensure_indexes)

    @runtime.on_startup
    async def dev_keys() -> None:
        """Development and tests: keys from the environment (refused in prod by Settings)."""
        now = runtime.clock.now()
        if settings.dev_portal_key:
            await stores.credentials.register(settings.dev_portal_key, "portal", DEV_PORTAL, ["*"], now)
        if settings.dev_staff_key:
            await stores.credentials.register(settings.dev_staff_key, "staff", DEV_STAFF, ["*"], now)

    notices: list[asyncio.Task[None]] = []

    async def tell_of_terms_changes() -> None:
        """R17 (HW 第14条): announced changes reach the people they will apply to, from start-up on."""
        while True:
            try:
                if told := await service.announce_terms():
                    log.info("told %d people of an announced terms change", told)
            except Exception as exc:  # database or broker away: next round
                log.warning("terms change notices paused: %s", exc)
            await asyncio.sleep(settings.terms_notice_every_seconds)

    @runtime.on_startup
    async def start_terms_notices() -> None:
        notices.append(asyncio.create_task(tell_of_terms_changes(), name="terms-notices"))

    @runtime.on_shutdown
    async def stop_terms_notices() -> None:
        for task in notices:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    limits = guard.rate_limits(settings, runtime.db, runtime.clock, vault)
    handlers.register(runtime.consumer, service, intake, limits, settings.broker_portal_prefix)
    app = runtime.http_app(title="Booking service", description="Portal intake and the life of a booking")
    credential = authenticator(stores.credentials)
    intake_guard = guard.build(settings, runtime.db, runtime.clock, limits, credential)
    app.include_router(api.router(service, intake, credential, intake_guard))
    span = staff_api.ListSpan(days_back=settings.list_days_back, max_days=settings.list_max_days)
    app.include_router(staff_api.router(service, credential, span))
    app.include_router(parking.ops_router(settings.amqp_url, runtime.queues, operator(credential)))
    api.document_form(app)
    install_errors(app)
    app.state.service = service
    return app


def install_errors(app: FastAPI) -> None:
    """Domain answers as HTTP: a rule's refusal and an illegal transition are 409, unknown ids 404,
    fields that fail their rules 422 (each field with its rule id, as the intake answers)."""

    async def rule(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RuleViolation)
        body = {
            "error": "refused",
            "rule": exc.rule,
            "message": exc.message,
            "field": exc.field,
            **exc.details,
        }
        return JSONResponse(body, 409)

    async def illegal(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, IllegalTransition)
        return JSONResponse(
            {"error": "illegal-transition", "status": exc.status.value, "message": str(exc)}, 409
        )

    async def fields(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidFields)
        return JSONResponse(invalid(exc.errors).body, 422)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "not-found", "message": str(exc)}, 404)

    async def busy(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "busy", "message": str(exc)}, 503, headers={"Retry-After": "1"})

    app.add_exception_handler(RuleViolation, rule)
    app.add_exception_handler(IllegalTransition, illegal)
    app.add_exception_handler(InvalidFields, fields)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(TransientError, busy)
