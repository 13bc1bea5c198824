"""Today / this week of an office: every consultation by time, with its status, counsellor, app and join
link; filter by counsellor; the list refreshes itself (htmx polling of its block)."""

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from services.console.web import Console, Person, day_param, staff_of


def when(b: dict[str, Any]) -> str:
    """What a booking is sorted by: its appointment, else its first wished window."""
    appt = b.get("appointment_record") or {}
    windows = b.get("windows") or [{}]
    return str(appt.get("start") or windows[0].get("start") or b.get("created_at"))


def rows(found: list[dict[str, Any]], counsellor: str | None) -> list[dict[str, Any]]:
    if counsellor:
        found = [b for b in found if (b.get("appointment_record") or {}).get("counsellor_id") == counsellor]
    return sorted(found, key=when)


def span(day: date, week: bool) -> tuple[date, date]:
    if not week:
        return day, day
    monday = day - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=6)


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]

    @api.get("/offices/{office_id}/today")
    async def today(  # noqa: PLR0917 (FastAPI passes query parameters by name)
        request: Request,
        office_id: str,
        person: Signed,
        date: str | None = None,
        week: bool = False,
        counsellor: str | None = None,
    ) -> Response:
        staff_of(person, request, office_id)
        day = day_param(date, console.clock)
        start, end = span(day, week)
        context: dict[str, Any] = {
            "office_id": office_id,
            "day": day,
            "start": start,
            "end": end,
            "week": week,
            "counsellor": counsellor or "",
            "poll": console.settings.poll_seconds,
            "bookings": [],
            "counsellors": [],
            "refusal": None,
        }

        async def fill(ctx: dict[str, Any]) -> None:
            found = await console.clients.booking.bookings(
                office_id, start.isoformat(), end.isoformat(), person.acting
            )
            ctx["bookings"] = rows(found, counsellor)
            ctx["counsellors"] = await console.clients.scheduler.counsellors(office_id, person.acting)

        return await console.show(request, "today.html", context, person, fill, block="schedule")

    return api
