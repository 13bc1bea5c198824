"""The office's counsellors as staff see them: weekly availability and dated exceptions, areas (R20),
apps and pre-issued rooms (R16), work email. Read here; changed through the scheduler's staff API
(`PUT /v1/staff/offices/{office}/counsellors/{id}`) or `consultctl scheduler counsellors load`."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from services.console.web import Console, Person, staff_of

WEEKDAYS = (
    ("mon", "月"),
    ("tue", "火"),
    ("wed", "水"),
    ("thu", "木"),
    ("fri", "金"),
    ("sat", "土"),
    ("sun", "日"),
)


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]

    @api.get("/offices/{office_id}/counsellors")
    async def counsellors(request: Request, office_id: str, person: Signed) -> Response:
        staff_of(person, request, office_id)
        context: dict[str, Any] = {"office_id": office_id, "counsellors": [], "weekdays": WEEKDAYS}

        async def fill(ctx: dict[str, Any]) -> None:
            ctx["counsellors"] = await console.clients.scheduler.counsellors(office_id, person.acting)

        return await console.show(request, "counsellors.html", context, person, fill)

    return api
