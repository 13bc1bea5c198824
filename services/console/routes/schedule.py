"""A counsellor's own schedule: their consultations of the day or the week, and nothing of anyone
else's (the scheduler answers only for the counsellor the console names, X-Acting-Counsellor)."""

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from services.console.routes.today import span
from services.console.web import Console, Person, day_param, needs


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]

    @api.get("/my/schedule")
    async def mine(request: Request, person: Signed, date: str | None = None, week: bool = True) -> Response:
        needs(person, "counsellor")
        a = person.account
        cid = a.counsellor_id or ""
        request.state.office_id = a.counsellor_office or "-"
        day = day_param(date, console.clock)
        start, end = span(day, week)
        context: dict[str, Any] = {"day": day, "start": start, "end": end, "week": week, "items": []}

        async def fill(ctx: dict[str, Any]) -> None:
            days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
            for d in days:  # the scheduler answers one day at a time
                found = await console.clients.scheduler.schedule(cid, d.isoformat(), person.acting)
                ctx["items"] += found["reservations"]

        return await console.show(request, "schedule.html", context, person, fill)

    return api
