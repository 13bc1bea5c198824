"""HTTP for office staff and the meeting side: the booking list, attendance (R08), the identity check
(R02, KG 第4条(1)), completion (R10), refusing (R13), deciding the no-show reviews (R09 where the office
decides) and lifting refusals (R09/R13). Staff keys are per office."""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import AwareDatetime, Field

from services.booking import views
from services.booking.api import booking_access, office_access
from services.booking.domain import Booking, InvalidFields, Status
from services.booking.service import BookingService
from services.booking.store import Credential
from shared.authfirst import AuthFirstRoute
from shared.clock import JST
from shared.commands import FieldError, normalize_email, normalize_jobseeker_number, normalize_phone
from shared.text import CleanText


class AttendanceIn(CleanText):
    how: Literal["joined", "contacted"] = Field(description="joined the meeting, or contacted the office")
    at: AwareDatetime | None = Field(
        None, description="when; default now. After start + grace is too late (R08)"
    )


class IdentityCheckIn(CleanText):
    method: Literal["name_and_contact", "photo_id", "jobseeker_card", "other"] = Field(
        description="how staff confirmed it: the booked name and contact details asked back, an ID "
        "document shown on camera, the job-seeker card, or otherwise"
    )
    confirmed: bool = Field(True, description="false: the identity could not be confirmed")
    at: AwareDatetime | None = Field(None, description="when; default now")


class CompletionIn(CleanText):
    started_at: AwareDatetime
    ended_at: AwareDatetime


class RefusalIn(CleanText):
    PROSE: ClassVar[frozenset[str]] = frozenset({"detail"})

    ground: str = Field(
        min_length=1,
        max_length=200,
        description="R13: one of the grounds the office's terms list (`misconduct` in GET /v1/offices/{id})",
    )
    detail: str | None = Field(
        None, min_length=1, max_length=500, description="what happened, in staff's words"
    )
    until: AwareDatetime | None = Field(None, description="end of the refusal; none: until lifted")


class ReviewDecisionIn(CleanText):
    decision: Literal["refuse", "dismiss"]
    until: AwareDatetime | None = Field(
        None, description="refuse: end of the refusal; default the office's refuse_for from now"
    )


def _midnight(day: date, days: int = 0) -> datetime:
    """The JST midnight that starts `day` (+ `days`)."""
    return datetime.combine(day + timedelta(days=days), time(), JST)


@dataclass(frozen=True)
class ListSpan:
    """The days a staff list covers (office policy, `Settings`): without dates, from `days_back`
    days before today to the office's booking horizon; at most `max_days` days at once, since a list
    reads one bucket per day."""

    days_back: int
    max_days: int

    def of(self, start: date | None, end: date | None, today: date, ahead: timedelta) -> tuple[date, date]:
        if start is None:
            start = min(end or today, today) - timedelta(days=self.days_back)
        if end is None:
            end = max(start, today) + ahead
        if (end - start).days >= self.max_days:
            last = start + timedelta(days=self.max_days - 1)
            message = f"at most {self.max_days} days at once (from {start}: to {last} at the latest)"
            raise InvalidFields([FieldError(field="to", message=message)])
        return start, end


def router(service: BookingService, credential: Any, span: ListSpan) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["staff"], route_class=AuthFirstRoute)
    # dependencies, so a caller of the wrong office or kind is refused before body and query are read
    Staff = Annotated[Credential, Depends(office_access(credential, "staff"))]
    StaffBooking = Annotated[Booking, Depends(booking_access(service, credential, "staff"))]
    Caller = Annotated[Credential, Depends(credential)]

    @api.get(
        "/offices/{office_id}/bookings",
        summary="Bookings of the office, by date of the appointment or wish",
        **views.shows(list[views.StaffView], "the bookings, as staff see them"),
    )
    async def list_bookings(  # noqa: PLR0917 (FastAPI passes query parameters by name)
        office_id: str,
        cred: Staff,
        status: Annotated[list[Status] | None, Query()] = None,
        start: Annotated[
            date | None,
            Query(alias="from", description="JST day; default `LIST_DAYS_BACK` days before today"),
        ] = None,
        end: Annotated[
            date | None, Query(alias="to", description="JST day, inclusive; default the booking horizon")
        ] = None,
        phone: Annotated[str | None, Query(description="the person's bookings, whatever their days")] = None,
        email: Annotated[str | None, Query(description="the person's bookings, whatever their days")] = None,
        jobseeker_number: Annotated[
            str | None, Query(description="the person's bookings, whatever their days")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,  # MongoDB skips take 64-bit ints only
    ) -> list[dict[str, Any]]:
        lookup = None
        try:
            if phone:
                lookup = ("phone", normalize_phone(phone))
            elif email:
                lookup = ("email", normalize_email(email))
            elif jobseeker_number:
                lookup = ("jobseeker_number", normalize_jobseeker_number(jobseeker_number))
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        statuses = [s.value for s in status] if status else None
        if lookup is not None:  # the person's bookings, whatever their days
            found = await service.stores.bookings.looked_up(
                office_id, lookup, status=statuses, after=_midnight(start) if start else None,
                before=_midnight(end, 1) if end else None, limit=limit, skip=offset,
            )  # fmt: skip
        else:
            today = service.now.astimezone(JST).date()
            first, last = span.of(start, end, today, service.policy(office_id).booking_horizon)
            found = await service.stores.bookings.find(
                office_id, after=_midnight(first), before=_midnight(last, 1), status=statuses,
                limit=limit, skip=offset,
            )  # fmt: skip
        return [views.staff_view(b) for b in found]

    @api.post(
        "/bookings/{booking_id}/attendance",
        summary="Joined or contacted: not a no-show (R08)",
        **views.shows(views.StaffView),
    )
    async def attendance(
        booking_id: str, booking: StaffBooking, cred: Caller, body: AttendanceIn
    ) -> dict[str, Any]:
        grace = service.policy(booking.office_id).no_show_grace
        now = service.now
        b = await service.change(
            booking_id, lambda b: b.attend(body.how, body.at or now, now, cred.person, grace)
        )
        return views.staff_view(b)

    @api.post(
        "/bookings/{booking_id}/identity-check",
        summary="The person's identity confirmed at the start of the session (KG 第4条(1), R02)",
        **views.shows(views.StaffView),
    )
    async def identity_check(
        booking_id: str, booking: StaffBooking, cred: Caller, body: IdentityCheckIn
    ) -> dict[str, Any]:
        now = service.now
        b = await service.change(
            booking_id,
            lambda b: b.check_identity(body.method, body.confirmed, body.at or now, now, cred.person),
        )
        return views.staff_view(b)

    @api.post(
        "/bookings/{booking_id}/completion",
        summary="The consultation took place: its usage window (R10)",
        **views.shows(views.StaffView),
    )
    async def completion(booking_id: str, booking: StaffBooking, body: CompletionIn) -> dict[str, Any]:
        required = service.policy(booking.office_id).identity_check
        b = await service.change(
            booking_id,
            lambda b: b.complete(body.started_at, body.ended_at, service.now, identity_required=required),
        )
        return views.staff_view(b)

    @api.post(
        "/bookings/{booking_id}/refusal",
        summary="Refuse the person for misconduct (R13)",
        **views.shows(views.StaffView),
    )
    async def refuse(booking_id: str, booking: StaffBooking, cred: Caller, body: RefusalIn) -> dict[str, Any]:
        b = await service.refuse(booking_id, body.ground, body.detail, body.until, cred.person)
        return views.staff_view(b)

    @api.get(
        "/offices/{office_id}/refusal-reviews",
        summary="People whose no-shows reached the threshold, for staff to decide (R09)",
        **views.shows(list[views.ReviewView], "the people under review"),
    )
    async def reviews(office_id: str, cred: Staff) -> list[dict[str, Any]]:
        service.policy(office_id)  # an unknown office is a 404 (its lists are named by it)
        return [views.review_view(p) for p in await service.stores.people.in_review(office_id)]

    @api.post(
        "/offices/{office_id}/refusal-reviews/{person_key}",
        summary="Refuse the person under review (R09), or dismiss the review",
        **views.shows(views.ReviewView),
    )
    async def decide(office_id: str, person_key: str, cred: Staff, body: ReviewDecisionIn) -> dict[str, Any]:
        person = await service.decide_review(
            office_id, person_key, refuse=body.decision == "refuse", until=body.until, by=cred.person
        )
        return views.review_view(person)

    @api.get(
        "/offices/{office_id}/refusals",
        summary="People refused now (R09, R13), by pseudonym",
        **views.shows(list[views.RefusalView], "the people refused now"),
    )
    async def refusals(office_id: str, cred: Staff) -> list[dict[str, Any]]:
        service.policy(office_id)  # an unknown office is a 404 (its lists are named by it)
        return [views.refusal_view(p) for p in await service.stores.people.refused(office_id, service.now)]

    @api.delete("/offices/{office_id}/refusals/{person_key}", summary="Lift a refusal")
    async def lift(office_id: str, person_key: str, cred: Staff) -> dict[str, Any]:
        lifted = await service.lift(office_id, person_key, cred.person)
        return {"person_key": person_key, "lifted": lifted}

    return api
