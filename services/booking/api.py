"""HTTP for portals: intake (the same handler as AMQP), the office calendar, a booking's state and the
person's own actions (accept or decline a proposed time, give new wished windows, ask to cancel)."""

from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from services.booking import rules, views
from services.booking.auth import for_office
from services.booking.domain import Booking, InvalidFields
from services.booking.guard import json_body
from services.booking.intake import Intake, Submission, invalid
from services.booking.service import BookingService
from services.booking.store import Credential
from shared.authfirst import AuthFirstRoute
from shared.commands import BookingForm, FieldError, WindowsForm
from shared.policy import Channel, TermsVersion
from shared.text import CleanText, is_clean


def body_of(form: str) -> dict[str, Any]:
    """OpenAPI for a route that reads its JSON body itself (to answer 422 in the intake's format)."""
    schema = {"$ref": f"#/components/schemas/{form}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


FORM_BODY = body_of("BookingForm")


class CancelIn(CleanText):
    channel: Channel = Field(description="how the person asked: portal, or phone/email taken by staff (R07)")
    by: Literal["person", "office"] = Field(
        "person", description="office: staff cancel on the office's behalf"
    )
    recorded_by: str | None = Field(None, max_length=100, description="staff member who took the call")


async def booking_for(
    service: BookingService, request: Request, cred: Credential, booking_id: str
) -> Booking:
    """The booking, if this caller may see it: staff of its office, or the portal that made it."""
    booking = await service.get(booking_id)
    for_office(request, cred, booking.office_id)
    if cred.kind == "portal" and booking.portal_id != cred.subject:
        raise HTTPException(404, "no such booking")
    return booking


def booking_access(service: BookingService, credential: Any, *kinds: str) -> Any:
    """Dependency: the booking named in the path, if the caller may act on it (`booking_for`) and is
    of one of these kinds. A dependency, so a refused caller is answered 401/403/404 before FastAPI
    validates the body or the query (no 422 that teaches a stranger the schema)."""

    async def booking(
        booking_id: str, request: Request, cred: Annotated[Credential, Depends(credential)]
    ) -> Booking:
        found = await booking_for(service, request, cred, booking_id)
        if kinds:
            for_office(request, cred, found.office_id, *kinds)
        return found

    return booking


def office_access(credential: Any, *kinds: str) -> Any:
    """Dependency: the caller, if it may act for the office in the path (and is of these kinds)."""

    async def caller(
        office_id: str, request: Request, cred: Annotated[Credential, Depends(credential)]
    ) -> Credential:
        for_office(request, cred, office_id, *kinds)
        return cred

    return caller


async def _unguarded() -> None:
    return None


def router(service: BookingService, intake: Intake, credential: Any, guard: Any = None) -> APIRouter:
    api = APIRouter(prefix="/v1", route_class=AuthFirstRoute)
    Caller = Annotated[Credential, Depends(credential)]
    Guarded = Annotated[None, Depends(guard or _unguarded)]  # signature and rate limits (guard.py)
    Mine = Annotated[Booking, Depends(booking_access(service, credential))]  # portal's own, or staff

    @api.post(
        "/offices/{office_id}/bookings",
        tags=["intake"],
        status_code=202,
        openapi_extra=FORM_BODY,
        responses={
            409: {"description": "refused by a rule"},
            422: {"description": "per-field errors"},
            429: {"description": "rate limit; see Retry-After"},
        },
        summary="Request a booking (BookingForm); 202 with the booking id, 422 field errors, 409 refusal",
    )
    async def request_booking(
        office_id: str,
        request: Request,
        cred: Caller,
        _guard: Guarded,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
    ) -> JSONResponse:
        for_office(request, cred, office_id, "portal")
        service.policy(office_id)  # an unknown office is a 404 before anything is claimed or sent
        if idempotency_key is not None and not is_clean(idempotency_key):
            error = FieldError(field="Idempotency-Key", message="control characters are not allowed")
            return JSONResponse(invalid([error]).body, 422)
        try:
            body = await json_body(request)
        except InvalidFields as exc:
            return JSONResponse(invalid(exc.errors).body, 422)
        outcome = await intake.submit(Submission(cred.subject, office_id, idempotency_key, body))
        headers = {"Location": f"/v1/bookings/{outcome.body['booking_id']}"} if outcome.status == 202 else {}
        return JSONResponse(outcome.body, outcome.status, headers=headers)

    @api.get(
        "/requests/{idempotency_key}", tags=["intake"], summary="The answer given to a request (HTTP or AMQP)"
    )
    async def request_outcome(idempotency_key: str, request: Request, cred: Caller) -> JSONResponse:
        doc = await service.stores.requests.get(cred.subject, idempotency_key)
        if doc is None or cred.kind != "portal":
            raise HTTPException(404, "no request with this key from this portal")
        request.state.office_id = doc["office_id"]
        if doc["state"] != "done":
            return JSONResponse({"state": "in-progress", "booking_id": doc["booking_id"]}, 200)
        return JSONResponse({"state": "done", "status": doc["status"], "answer": doc["answer"]}, 200)

    @api.get(
        "/bookings/{booking_id}",
        tags=["bookings"],
        summary="A booking's state; the meeting URL once confirmed",
        **views.shows(views.PortalView | views.StaffView, "the portal's view, or staff's with the person"),
    )
    async def get_booking(booking: Mine, cred: Caller) -> dict[str, Any]:
        return views.staff_view(booking) if cred.kind == "staff" else views.portal_view(booking)

    @api.post(
        "/bookings/{booking_id}/alternatives/{option_id}/acceptance",
        tags=["bookings"],
        **views.shows(views.PortalView),
    )
    async def accept(booking_id: str, option_id: str, booking: Mine) -> dict[str, Any]:
        """The person takes one of the proposed times (R05)."""
        cal = service.calendar(booking.office_id)
        b = await service.change(booking_id, lambda b: b.accept(option_id, service.now, cal))
        return views.portal_view(b)

    @api.post(
        "/bookings/{booking_id}/alternatives/decline", tags=["bookings"], **views.shows(views.PortalView)
    )
    async def decline(booking_id: str, booking: Mine) -> dict[str, Any]:
        """The person takes none of the proposed times; the held slots are released and the office
        coordinates again (R05): the booking waits for staff to propose or confirm."""
        policy = service.policy(booking.office_id)
        return views.portal_view(await service.change(booking_id, lambda b: b.decline(service.now, policy)))

    @api.post(
        "/bookings/{booking_id}/windows",
        tags=["bookings"],
        summary="The person's new wished windows while the office coordinates again (R05)",
        openapi_extra=body_of("WindowsForm"),
        responses={
            200: {"model": views.PortalView | views.StaffView, "description": "the booking, requested again"},
            409: {"description": "the booking is not waiting for coordination (illegal-transition)"},
            422: {"description": "per-field errors with their rule ids (R01, R02, R04)"},
        },
        response_model=None,
    )
    async def change_windows(
        booking_id: str, booking: Mine, cred: Caller, request: Request
    ) -> dict[str, Any]:
        """R05 (KG 第4条(2) 改めて日程調整): the person's new wished windows (`WindowsForm`) for a
        booking the office coordinates again (declined the proposed times, or none could be
        offered). Checked as at intake; the booking is requested again and coordinated with them
        as a new request, and the person is answered as for one."""
        form = rules.read_windows(await json_body(request))
        b = await service.change_windows(booking_id, form, cred.actor)  # staff: taken by phone
        return views.staff_view(b) if cred.kind == "staff" else views.portal_view(b)

    @api.post(
        "/bookings/{booking_id}/cancellations",
        tags=["bookings"],
        **views.shows(
            views.PortalView | views.StaffView, "the cancelled booking: the portal's or staff's view"
        ),
    )
    async def cancel(booking_id: str, booking: Mine, cred: Caller, body: CancelIn) -> dict[str, Any]:
        """R07: by a channel the office accepts; phone (and KG email) cancellations are recorded by staff.
        A refusal (409 R07) carries `how_to_cancel` with the office's phone number."""
        policy = service.policy(booking.office_id)
        staff = cred.kind == "staff"
        b = await service.change(
            booking_id,
            lambda b: b.cancel(
                channel=body.channel,
                by=body.by,
                recorded_by=(body.recorded_by or cred.person) if staff else cred.actor,
                staff=staff,
                now=service.now,
                policy=policy,
            ),
        )
        return views.staff_view(b) if staff else views.portal_view(b)

    @api.get(
        "/offices/{office_id}/calendar",
        tags=["offices"],
        summary="Open days, R04 deadlines, R06 notice dates",
    )
    async def calendar(
        office_id: str,
        request: Request,
        start: Annotated[date, Query(alias="from")],
        end: Annotated[date, Query(alias="to")],
    ) -> dict[str, Any]:
        service.policy(office_id)
        request.state.office_id = office_id
        if end < start or end - start > timedelta(days=366) or not 2000 <= start.year <= end.year <= 2999:
            raise HTTPException(422, "from ≤ to, at most 366 days apart, years 2000–2999")
        cal, now = service.calendar(office_id), service.now
        days = [
            {
                "date": str(d.date),
                "open": d.open,
                "closed_because": d.closed_because,
                "confirmation_deadline": str(d.confirmation_deadline) if d.confirmation_deadline else None,
                "notice_date": str(d.notice_date) if d.notice_date else None,
                "bookable": cal.bookable(d.date, now),
            }
            for d in cal.days(start, end)
        ]
        return {"office_id": office_id, "timezone": "Asia/Tokyo", "days": days}

    @api.get(
        "/offices/{office_id}", tags=["offices"], summary="What a portal needs to build the office's form"
    )
    async def office(office_id: str, request: Request) -> dict[str, Any]:
        p = service.policy(office_id)
        request.state.office_id = office_id
        terms = p.terms_in_force(service.now)
        return {
            "office_id": p.office_id,
            "name": p.name,
            "service_name": p.service_name,
            "phone": p.phone,
            "email": p.email,
            "form": [f.value for f in p.form],  # R02
            "max_minutes": p.max_minutes,  # R01
            "lead_time_open_days": p.lead_time_open_days,  # R04
            "lead_time_exception": p.lead_time_exception,  # R04: staff may confirm later, with a reason
            "hours": {"opens": f"{p.hours.opens:%H:%M}", "closes": f"{p.hours.closes:%H:%M}"},
            "device_checklist": [c.model_dump() for c in p.device_checklist],  # R19
            "terms": terms_view(terms, p.terms_announced(service.now)),  # R17
            "meeting_apps": [a.value for a in p.meeting_apps],  # R16
            "areas": [a.name for a in p.areas],  # R20
            "cancellation": {
                "channels": [c.value for c in p.cancellation.channels],
                "same_day_channels": [c.value for c in p.cancellation.same_day_channels],
            },
            "notes": {"fee": p.fee_note, "private_room": p.private_room_note, "recording": p.recording_note},
            "misconduct": p.misconduct,  # R13: what may stop a consultation or refuse its use
        }

    return api


def terms_view(current: TermsVersion, announced: TermsVersion | None) -> dict[str, Any]:
    """R17: the version in force, and the next one once announced (its date, what changes, where)."""

    def one(t: TermsVersion) -> dict[str, Any]:
        return {
            "version": t.version,
            "effective_from": str(t.effective_from),
            "summary": t.summary,
            "url": t.url,
        }

    nxt = {**one(announced), "announced_on": str(announced.announced_on)} if announced else None
    return {**one(current), "next": nxt}


def document_form(app: FastAPI) -> None:
    """Put BookingForm and WindowsForm into the OpenAPI components: the intake and windows routes
    read the raw body themselves (to answer 422 in the intake's format; intake hashes it too)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (BookingForm, WindowsForm):
            form = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, d in form.pop("$defs", {}).items():
                components.setdefault(name, d)
            components[model.__name__] = form
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
