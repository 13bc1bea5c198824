"""Operations (role operator): queue depths, consumers and parked messages per service, from the
RabbitMQ management API as the console's own monitoring user reads it; the reasons of parked
messages when asked; replay of a service's parked messages after a confirmation, done by the service
that owns the parking queue (`POST /v1/ops/parked/replay`), never by the console."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from services.console import operations
from services.console.clients import Broker, ServiceError
from services.console.web import Console, Person, answer_status, needs, refused
from shared import topology
from shared.acting import OPERATOR
from shared.parking import MAX_REPLAY, Parked

ROLE = OPERATOR


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]

    def broker() -> Broker:
        if console.clients.broker is None:
            raise ServiceError(
                "rabbitmq", 503, {"detail": "no management API user (RABBITMQ_MONITOR_PASSWORD)"}
            )
        return console.clients.broker

    def service_of(service: str) -> str:
        if service not in topology.SERVICES:
            raise HTTPException(404, "no such service")
        return service

    async def page(request: Request, person: Person, *, status: int = 200, **extra: Any) -> Response:
        context: dict[str, Any] = {
            "services": [],
            "peek_max": console.settings.ops_peek_max,
            "poll": console.settings.poll_seconds,
            "kinds": operations.KINDS,
            "reason_text": operations.reason_text,
            **extra,
        }

        async def fill(ctx: dict[str, Any]) -> None:
            ctx["services"] = operations.figures(await broker().queues())

        return await console.show(request, "ops.html", context, person, fill, status=status, block="queues")

    @api.get("/ops")
    async def show(request: Request, person: Signed, done: str = "", moved: int | None = None) -> Response:
        needs(person, ROLE)
        return await page(request, person, done=done, moved=moved)

    @api.post("/ops/{service}/peek")
    async def peek(request: Request, service: str, person: Signed) -> Response:
        """The reasons of up to `ops_peek_max` parked messages (each shown is delivered once more)."""
        needs(person, ROLE)
        await console.checked(request, person)
        service = service_of(service)
        try:
            shown = await broker().peek(topology.SERVICES[service].parking, console.settings.ops_peek_max)
        except ServiceError as err:
            return await page(request, person, refusal=refused(err), status=answer_status(err))
        return await page(request, person, peeked=service, parked=[Parked.of(m) for m in shown])

    @api.get("/ops/{service}/replay")
    async def confirm(request: Request, service: str, person: Signed) -> Response:
        """The confirmation: how many are parked now, and what a replay does."""
        needs(person, ROLE)
        service = service_of(service)
        context: dict[str, Any] = {"service": service, "figures": None, "max_replay": MAX_REPLAY}

        async def fill(ctx: dict[str, Any]) -> None:
            ctx["figures"] = operations.of_service(await broker().queues(), service)

        return await console.show(request, "ops_replay.html", context, person, fill)

    @api.post("/ops/{service}/replay")
    async def replay(request: Request, service: str, person: Signed) -> Response:
        needs(person, ROLE)
        form = await console.checked(request, person)
        service = service_of(service)
        if service not in operations.REPLAYS_OVER_HTTP:
            raise HTTPException(409, "replay-cli")
        try:
            limit = int(form.get("limit"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_REPLAY:
            raise HTTPException(422, "replay-limit")
        try:
            done = await console.clients.of(service).replay_parked(limit, person.acting)
        except ServiceError as err:
            return await page(request, person, refusal=refused(err), status=answer_status(err))
        return RedirectResponse(f"/ops?done=replayed&moved={int(done['moved'])}", 303)

    return api
