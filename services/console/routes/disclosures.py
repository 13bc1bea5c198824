"""Legal disclosures (R11) in the console: the list, a request on a legal basis, and its approval or
rejection by a different person (four eyes: the audit service refuses the requester's own decision,
whatever key the console calls with). Every step is an audit record naming the person."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from services.console.clients import ServiceError
from services.console.routes.audit import readers_only
from services.console.web import Console, Form, Person, answer_status, refused


def disclosure_body(form: Form) -> dict[str, Any]:
    scope = {k: form.get(k) for k in ("office_id", "booking_id", "device_key", "ip_key") if form.get(k)}
    body: dict[str, Any] = {
        "legal_basis": form.get("legal_basis"),
        "authority": form.get("authority"),
        "reference_number": form.get("reference_number"),
        "scope": scope,
    }
    if note := form.get("note"):
        body["note"] = note
    return body


def router(console: Console) -> APIRouter:
    api = APIRouter(prefix="/audit")
    Signed = Annotated[Person, Depends(console.person)]
    audit = console.clients.audit
    reader = readers_only

    async def disclosures_page(
        request: Request, person: Person, *, status: int = 200, **extra: Any
    ) -> Response:
        context: dict[str, Any] = {"items": [], "form": {}, **extra}

        async def fill(ctx: dict[str, Any]) -> None:
            ctx["items"] = await audit.disclosures(person.acting)

        return await console.show(request, "audit_disclosures.html", context, person, fill, status=status)

    @api.get("/disclosures")
    async def disclosures(request: Request, person: Signed, done: str = "") -> Response:
        reader(person, request)
        return await disclosures_page(request, person, done=done)

    @api.post("/disclosures")
    async def request_disclosure(request: Request, person: Signed) -> Response:
        reader(person, request)
        form = await console.checked(request, person)
        try:
            made = await audit.request_disclosure(disclosure_body(form), person.acting)
        except ServiceError as err:
            fields = {k: form.get(k) for k in form.data}
            return await disclosures_page(
                request, person, refusal=refused(err), form=fields, status=answer_status(err)
            )
        return RedirectResponse(f"/audit/disclosures/{made['disclosure_id']}?done=requested", 303)

    async def disclosure_page(
        request: Request,
        disclosure_id: str,
        person: Person,
        *,
        done: str = "",
        status: int = 200,
        **extra: Any,
    ) -> Response:
        context: dict[str, Any] = {"d": None, "done": done, **extra}

        async def fill(ctx: dict[str, Any]) -> None:
            ctx["d"] = await audit.disclosure(disclosure_id, person.acting)

        return await console.show(request, "audit_disclosure.html", context, person, fill, status=status)

    @api.get("/disclosures/{disclosure_id}")
    async def disclosure(request: Request, disclosure_id: str, person: Signed, done: str = "") -> Response:
        reader(person, request)
        return await disclosure_page(request, disclosure_id, person, done=done)

    @api.post("/disclosures/{disclosure_id}/{decision}")
    async def decide(request: Request, disclosure_id: str, decision: str, person: Signed) -> Response:
        reader(person, request)
        if decision not in ("approve", "reject"):
            raise HTTPException(404, "no such decision")
        form = await console.checked(request, person)
        try:
            await audit.decide(
                disclosure_id, decision == "approve", form.get("reason") or None, person.acting
            )
        except ServiceError as err:
            return await disclosure_page(
                request, disclosure_id, person, status=answer_status(err), refusal=refused(err)
            )
        done = "approved" if decision == "approve" else "rejected"
        return RedirectResponse(f"/audit/disclosures/{disclosure_id}?done={done}", 303)

    return api
