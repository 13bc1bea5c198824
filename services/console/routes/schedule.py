"""A counsellor's own schedule: their consultations of the day or the week, and nothing of anyone
else's (the scheduler answers only for the counsellor the console names, X-Acting-Counsellor)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from services.console.clients import ServiceError
from services.console.routes.today import span
from services.console.web import Console, Person, answer_status, day_param, needs, refused


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]

    @api.get("/my/schedule")
    async def mine(request: Request, person: Signed, date: str | None = None, week: bool = True) -> Response:
        needs(person, "counsellor")
        a = person.account
        office_id = a.counsellor_office or ""
        request.state.office_id = office_id
        day = day_param(date, console.clock)
        start, end = span(day, week)
        context: dict[str, Any] = {"day": day, "start": start, "end": end, "week": week, "items": []}
        status = 200
        try:
            context["items"] = await console.clients.scheduler.schedule(
                office_id, start.isoformat(), end.isoformat(), person.acting, counsellor_id=a.counsellor_id
            )
        except ServiceError as err:
            context["refusal"], status = refused(err), answer_status(err)
        return console.render(request, "schedule.html", context, person=person, status=status)

    return api
