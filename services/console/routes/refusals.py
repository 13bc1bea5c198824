"""People refused (R09 no-shows, R13 misconduct) with the refusal's end, lifting a refusal, and the
review list: people whose no-shows reached the office's threshold, refused (until a date staff may
choose, else for the office's `refusal.refuse_for`) or dismissed by staff."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from services.console.clients import ServiceError
from services.console.web import Console, Person, answer_status, day_start, refused, staff_of


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]
    booking = console.clients.booking
    policies = console.settings.policies()

    async def page(
        request: Request, office_id: str, person: Person, *, status: int = 200, **extra: Any
    ) -> Response:
        policy = policies.get(office_id)
        context: dict[str, Any] = {
            "office_id": office_id,
            "refused": [],
            "reviews": [],
            "refuse_days": policy.refusal.refuse_for.days if policy else None,
            **extra,
        }

        async def fill(ctx: dict[str, Any]) -> None:
            ctx["refused"] = await booking.refusals(office_id, person.acting)
            ctx["reviews"] = await booking.reviews(office_id, person.acting)

        return await console.show(request, "refusals.html", context, person, fill, status=status)

    @api.get("/offices/{office_id}/refusals")
    async def show(request: Request, office_id: str, person: Signed, done: str = "") -> Response:
        staff_of(person, request, office_id)
        return await page(request, office_id, person, done=done)

    @api.post("/offices/{office_id}/refusals/{person_key}/lift")
    async def lift(request: Request, office_id: str, person_key: str, person: Signed) -> Response:
        staff_of(person, request, office_id)
        await console.checked(request, person)
        try:
            await booking.lift(office_id, person_key, person.acting)
        except ServiceError as err:
            return await page(request, office_id, person, refusal=refused(err), status=answer_status(err))
        return RedirectResponse(f"/offices/{office_id}/refusals?done=lifted", 303)

    @api.post("/offices/{office_id}/reviews/{person_key}")
    async def decide(request: Request, office_id: str, person_key: str, person: Signed) -> Response:
        staff_of(person, request, office_id)
        form = await console.checked(request, person)
        decision = "refuse" if form.get("decision") == "refuse" else "dismiss"
        body: dict[str, Any] = {"decision": decision}
        if decision == "refuse" and (until := form.get("until")):  # else the office's refuse_for
            try:
                body["until"] = day_start(until)
            except ValueError:
                raise HTTPException(422, "date") from None
        try:
            await booking.decide(office_id, person_key, body, person.acting)
        except ServiceError as err:
            # booking's reason beside the row's field it names (R09: the end must be in the future)
            beside = {"person_key": person_key, "field": err.body.get("field"), "until": form.get("until")}
            return await page(
                request, office_id, person, refusal=refused(err), beside=beside, status=answer_status(err)
            )
        return RedirectResponse(f"/offices/{office_id}/refusals?done={decision}", 303)

    return api
