"""The coordination queue (R05): requests waiting for staff with the person's wished windows, the free
counsellors and slots of a day (R20 areas; each counsellor's apps, R16), confirm in one action or
propose up to three alternatives; holds and their expiry; the R04 deadline of each wished day and,
where the office allows it, confirming later with a reason."""

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from services.console.clients import ServiceError
from services.console.labels import instant
from services.console.web import Console, Person, answer_status, refused, staff_of
from shared.clock import JST

MAX_ALTERNATIVES = 3
MAX_SLOTS = 40  # the closest to the wished times; another day is one link away


def wished_days(request_doc: dict[str, Any]) -> list[date]:
    days = {instant(w["start"]).astimezone(JST).date() for w in request_doc.get("windows", [])}  # type: ignore[union-attr]
    return sorted(days)


def in_windows(slot: dict[str, Any], windows: list[dict[str, Any]]) -> bool:
    s, e = instant(slot["start"]), instant(slot["end"])
    return any(instant(w["start"]) <= s and e <= instant(w["end"]) for w in windows)  # type: ignore[operator]


def nearness(slot: dict[str, Any], windows: list[dict[str, Any]]) -> float:
    """Seconds between the slot and the nearest wished window (0 inside one): closest first."""
    s, e = instant(slot["start"]), instant(slot["end"])
    assert s is not None and e is not None
    gaps = []
    for w in windows:
        ws, we = instant(w["start"]), instant(w["end"])
        assert ws is not None and we is not None
        gaps.append(max((ws - e).total_seconds(), (s - we).total_seconds(), 0.0))
    return min(gaps, default=0.0)


def slot_value(counsellor_id: str, start: str) -> str:
    return f"{counsellor_id}|{start}"


def parse_slot(value: str) -> tuple[str, datetime]:
    counsellor_id, _, start = value.partition("|")
    return counsellor_id, datetime.fromisoformat(start)


async def deadlines(
    console: Console, office_id: str, days: list[date], person: Person
) -> dict[str, str | None]:
    """R04: by when each day's consultation must be confirmed (booking's office calendar)."""
    if not days:
        return {}
    cal = await console.clients.booking.calendar(
        office_id, days[0].isoformat(), days[-1].isoformat(), person.acting
    )
    return {d["date"]: d.get("confirmation_deadline") for d in cal["days"]}


async def detail(
    console: Console, request: Request, person: Person, ids: tuple[str, str], day: str | None
) -> dict[str, Any]:
    """The request, the office, its counsellors and the day's free slots, wished ones first."""
    booking, scheduler = console.clients.booking, console.clients.scheduler
    office_id, booking_id = ids
    doc = await scheduler.request(booking_id, person.acting)
    if doc.get("office_id") != office_id:
        staff_of(person, request, str(doc.get("office_id")))
    days = wished_days(doc)
    chosen = date.fromisoformat(day) if day else (days[0] if days else console.clock.now().date())
    office = await booking.office(office_id, person.acting)
    counsellors = {c["counsellor_id"]: c for c in await scheduler.counsellors(office_id, person.acting)}
    minutes = int(doc.get("minutes") or 30)
    windows = doc.get("windows", [])
    near = next((w["start"] for w in windows if wished_days({"windows": [w]}) == [chosen]), None)
    slots = await scheduler.free_slots(
        office_id, person.acting, day=chosen.isoformat(), area=doc.get("area"), minutes=minutes, near=near
    )
    for s in slots:
        s["wished"] = in_windows(s, windows)
        s["value"] = slot_value(s["counsellor_id"], s["start"])
    slots.sort(key=lambda s: (not s["wished"], nearness(s, windows), s["start"]))
    shown = sorted(
        slots[:MAX_SLOTS], key=lambda s: (instant(s["start"]), s["counsellor_id"])
    )  # in time order
    return {
        "office_id": office_id,
        "office": office,
        "req": doc,
        "day": chosen,
        "days": days,
        "next_day": chosen + timedelta(days=1),
        "prev_day": chosen - timedelta(days=1),
        "slots": shown,
        "counsellors": counsellors,
        "deadlines": await deadlines(console, office_id, sorted({*days, chosen}), person),
        "max_alternatives": MAX_ALTERNATIVES,
    }


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]
    scheduler = console.clients.scheduler

    @api.get("/offices/{office_id}/coordination")
    async def queue(request: Request, office_id: str, person: Signed, done: str = "") -> Response:
        staff_of(person, request, office_id)
        context: dict[str, Any] = {"office_id": office_id, "requests": [], "deadlines": {}, "done": done}

        async def fill(ctx: dict[str, Any]) -> None:
            waiting = await scheduler.requests(office_id, person.acting)
            days = sorted({d for r in waiting for d in wished_days(r)})
            ctx["requests"] = sorted(waiting, key=lambda r: str(r.get("created_at")))
            ctx["deadlines"] = await deadlines(console, office_id, days, person)

        return await console.show(request, "coordination.html", context, person, fill)

    @api.get("/offices/{office_id}/coordination/{booking_id}")
    async def one(
        request: Request, office_id: str, booking_id: str, person: Signed, day: str | None = None
    ) -> Response:
        staff_of(person, request, office_id)
        try:
            context = await detail(console, request, person, (office_id, booking_id), day)
        except ServiceError as err:
            context = {"office_id": office_id, "req": None, "refusal": refused(err)}
            return console.render(request, "request.html", context, person=person, status=answer_status(err))
        return console.render(request, "request.html", context, person=person, block="slots")

    @api.post("/offices/{office_id}/coordination/{booking_id}")
    async def act(request: Request, office_id: str, booking_id: str, person: Signed) -> Response:
        staff_of(person, request, office_id)
        form = await console.checked(request, person)
        try:
            if chosen := form.get("confirm"):
                counsellor_id, start = parse_slot(chosen)
                body: dict[str, Any] = {"counsellor_id": counsellor_id, "start": start.isoformat()}
                if reason := form.get("late_reason"):
                    body["late_reason"] = reason
                await scheduler.confirm(booking_id, body, person.acting)
                done = "confirmed"
            else:
                picked = form.all("option")
                if not 1 <= len(picked) <= MAX_ALTERNATIVES:
                    raise ServiceError("console", 422, {"detail": "代替日時は1〜3つ選んでください。"})
                options = [{"counsellor_id": c, "start": s.isoformat()} for c, s in map(parse_slot, picked)]
                await scheduler.propose(booking_id, {"options": options}, person.acting)
                done = "proposed"
        except (ServiceError, ValueError) as err:
            problem = (
                err if isinstance(err, ServiceError) else ServiceError("console", 422, {"detail": str(err)})
            )
            try:
                day = form.get("day") or None
                context = await detail(console, request, person, (office_id, booking_id), day)
            except ServiceError:
                context = {"office_id": office_id, "req": None}
            context["refusal"] = refused(problem)
            if problem.service == "console":
                context["refusal"]["text"] = problem.message
            return console.render(
                request, "request.html", context, person=person, status=answer_status(problem)
            )
        return RedirectResponse(f"/offices/{office_id}/coordination?done={done}", 303)

    return api
