"""A booking's page: the person's details (decrypted by booking, for staff only; the URL carries only
the booking id), the timeline of its changes, and the staff actions: a phone (or email) cancellation
(R07: booking enforces the same-day rule and its refusal is shown), joined or contacted (R08), the
identity check (R02), re-scheduling (the coordination page) and refusing for misconduct (R13)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from services.console.clients import ServiceError
from services.console.web import Console, Form, Person, answer_status, day_start, needs, refused, staff_of

DONE = {
    "cancellations": "cancelled",
    "attendance": "attended",
    "identity-check": "identity",
    "refusal": "refused",
}


def body_of(action: str, form: Form) -> dict[str, Any]:
    """What booking takes for the action, from the form (booking validates it)."""
    if action == "cancellations":
        return {"channel": form.get("channel"), "by": form.get("by", "person")}
    if action == "attendance":
        return {"how": form.get("how")}
    if action == "identity-check":
        return {"method": form.get("method"), "confirmed": form.get("confirmed", "yes") == "yes"}
    body: dict[str, Any] = {"ground": form.get("ground")}
    if detail := form.get("detail"):
        body["detail"] = detail
    if until := form.get("until"):  # a date: the refusal ends at the start of that day (JST)
        body["until"] = day_start(until)
    return body


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]
    booking = console.clients.booking

    async def page(
        request: Request, booking_id: str, person: Person, *, status: int = 200, **extra: Any
    ) -> Response:
        needs(person, "staff")
        try:
            b = await booking.booking(booking_id, person.acting)
        except ServiceError as err:
            context = {"b": None, "refusal": refused(err)}
            return console.render(request, "booking.html", context, person=person, status=answer_status(err))
        staff_of(person, request, b["office_id"])
        office = await booking.office(b["office_id"], person.acting)
        context = {"b": b, "office": office, "office_id": b["office_id"], **extra}
        return console.render(request, "booking.html", context, person=person, status=status)

    @api.get("/bookings/{booking_id}")
    async def show(request: Request, booking_id: str, person: Signed, done: str = "") -> Response:
        return await page(request, booking_id, person, done=done)

    @api.post("/bookings/{booking_id}/{action}")
    async def act(request: Request, booking_id: str, action: str, person: Signed) -> Response:
        if action not in DONE:
            raise HTTPException(404, "no such action")
        needs(person, "staff")
        form = await console.checked(request, person)
        try:
            await booking.act(booking_id, action, body_of(action, form), person.acting)
        except ServiceError as err:
            return await page(
                request, booking_id, person, status=answer_status(err), refusal=refused(err), action=action
            )
        except ValueError:
            raise HTTPException(422, "date") from None
        return RedirectResponse(f"/bookings/{booking_id}?done={DONE[action]}", 303)

    return api
