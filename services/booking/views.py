"""What the read side shows: a portal sees its booking's state and, once confirmed, the meeting URL;
office staff also see the person's details (they phone people, R07) and the history."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, Field

from services.booking.domain import Booking, Status
from services.booking.refusals import PersonRecord
from shared.clock import format_jst

#: states in which the appointment (and its meeting URL) is the person's to use
SHOW_APPOINTMENT = {Status.CONFIRMED, Status.ATTENDED, Status.COMPLETED}


# ------------------------------------------------------------------ what the routes return (OpenAPI)
#
# The views below build plain dicts; these models describe them for the OpenAPI documents, and
# tests/unit/test_booking_views.py checks that every view validates against its model. Times are
# ISO 8601 strings with their offset.


class Span(BaseModel):
    start: str
    end: str


class AppointmentView(Span):
    when: str = Field(description="the time as the person reads it (JST)")
    meeting_url: str = Field(description="join URL in the office's meeting app (R16)")
    app: str
    counsellor_name: str
    version: int
    meeting_id: str | None = Field(None, description="the room's meeting id, where the app has one (R16)")
    passcode: str | None = Field(None, description="the room's passcode, where the app has one (R16)")


class AlternativeView(Span):
    option_id: str = Field(description="what the person names to accept this time (R05)")
    when: str


class CancellationView(BaseModel):
    reason: str = Field(description="person, staff, no_show, refused or rejected")
    channel: str | None
    at: str


class PortalView(BaseModel):
    """A booking as the portal that made it sees it: the appointment only once it is the person's."""

    booking_id: str
    office_id: str
    status: str
    created_at: str
    updated_at: str
    windows: list[Span] = Field(description="the times the person asked for")
    duration_minutes: int
    companions: list[str]
    terms_version: str
    terms_agreed_at: str = Field(description="R17: when the person agreed to the terms of that version")
    appointment: AppointmentView | None = Field(
        description="once confirmed (and after): time and meeting URL"
    )
    alternatives: list[AlternativeView] = Field(description="the proposed times while re-coordinating (R05)")
    hold_expires_at: str | None
    cancellation: CancellationView | None
    rejection: dict[str, str] | None = Field(description="rule and message when the office could not take it")


class StaffCancellationView(CancellationView):
    recorded_by: str | None
    note: str | None


class HistoryEntry(BaseModel):
    status: str
    at: str
    note: str


class StaffView(PortalView):
    """A booking as office staff see it: the person's details (they phone people, R07) and the history."""

    portal_id: str
    request_id: str
    area: str | None
    person: dict[str, str] = Field(description="the person's details as given on the form")
    person_key: str = Field(description="the person's pseudonym (R09 counts, R13 refusals)")
    appointment_record: dict[str, Any] | None = Field(description="the appointment as the scheduler sent it")
    attendance: dict[str, str] | None = Field(
        description="how and when the person joined or was reached (R08)"
    )
    identity_check: dict[str, Any] | None = Field(
        None, description="method, confirmed, at, recorded_by: the identity check at the session (R02)"
    )
    completion: dict[str, str] | None = Field(description="the usage window: started_at, ended_at (R10)")
    history: list[HistoryEntry]
    version: int
    cancellation: StaffCancellationView | None


class RefusalView(BaseModel):
    """A person refused now (R09, R13), by pseudonym."""

    person_key: str
    office_id: str
    rule: str | None
    reason: str | None
    since: str | None
    until: str | None
    by: str | None
    ground: str | None = Field(None, description="R13: the ground of the office's terms")
    no_shows: int


class ReviewView(BaseModel):
    """A person whose no-shows reached the office's threshold, for staff to decide (R09)."""

    person_key: str
    office_id: str
    under_review: bool = Field(description="false once decided")
    since: str | None
    no_shows: int = Field(description="no-shows counted towards the threshold")
    last_booking_id: str | None
    refusal: RefusalView | None = Field(description="the refusal, if staff refused")


def shows(model: Any, description: str = "the booking as the caller may see it") -> dict[str, Any]:
    """Route options documenting what a route returns (its view's model) without re-validating the
    view it builds: `@api.get(..., **shows(PortalView))`."""
    return {"response_model": None, "responses": {200: {"model": model, "description": description}}}


def _iso(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


def portal_view(b: Booking) -> dict[str, Any]:
    appt = b.appointment if b.status in SHOW_APPOINTMENT else None
    view: dict[str, Any] = {
        "booking_id": b.booking_id,
        "office_id": b.office_id,
        "status": b.status.value,
        "created_at": _iso(b.created_at),
        "updated_at": _iso(b.updated_at),
        "windows": [{"start": _iso(w.start), "end": _iso(w.end)} for w in b.windows],
        "duration_minutes": b.duration_minutes,
        "companions": b.companions,
        "terms_version": b.terms_version,
        "terms_agreed_at": _iso(b.terms_agreed_at),
        "appointment": None,
        "alternatives": [],
        "hold_expires_at": _iso(b.hold_expires_at),
        "cancellation": None,
        "rejection": b.rejection,
    }
    if appt is not None:
        view["appointment"] = {
            "start": _iso(appt.start),
            "end": _iso(appt.end),
            "when": format_jst(appt.start, appt.end),
            "meeting_url": appt.meeting_url,
            "app": appt.app,
            "counsellor_name": appt.counsellor_name,
            "version": appt.version,
            "meeting_id": appt.meeting_id,
            "passcode": appt.passcode,
        }
    if b.status == Status.RECOORDINATION_PROPOSED:
        view["alternatives"] = [
            {
                "option_id": a.option_id,
                "start": _iso(a.start),
                "end": _iso(a.end),
                "when": format_jst(a.start, a.end),
            }
            for a in b.alternatives
        ]
    if b.cancellation is not None:
        c = b.cancellation
        view["cancellation"] = {"reason": c.reason, "channel": c.channel, "at": _iso(c.at)}
    return view


def staff_view(b: Booking) -> dict[str, Any]:
    view = portal_view(b)
    appt = b.appointment
    view.update(
        portal_id=b.portal_id,
        request_id=b.request_id,
        area=b.area,
        person={k: v for k, v in asdict(b.person).items() if v is not None},
        person_key=b.person_key,
        appointment_record=appt.model_dump(mode="json") if appt else None,
        attendance={k: _iso(v) for k, v in asdict(b.attendance).items()} if b.attendance else None,
        identity_check={k: _iso(v) for k, v in asdict(b.identity_check).items()}
        if b.identity_check
        else None,
        completion={"started_at": _iso(b.completion.start), "ended_at": _iso(b.completion.end)}
        if b.completion
        else None,
        history=[{"status": c.status.value, "at": _iso(c.at), "note": c.note} for c in b.history],
        version=b.version,
    )
    if b.cancellation is not None:
        view["cancellation"] = {k: _iso(v) for k, v in asdict(b.cancellation).items()}
    return view


def review_view(p: PersonRecord) -> dict[str, Any]:
    r, refusal = p.review, p.refusal
    return {
        "person_key": p.person_key,
        "office_id": p.office_id,
        "under_review": r is not None,
        "since": _iso(r.since) if r else None,
        "no_shows": r.no_shows if r else len(p.no_shows),
        "last_booking_id": r.last_booking_id if r else None,
        "refusal": refusal_view(p) if refusal else None,
    }


def refusal_view(p: PersonRecord) -> dict[str, Any]:
    r = p.refusal
    return {
        "person_key": p.person_key,
        "office_id": p.office_id,
        "rule": r.rule if r else None,
        "reason": r.reason if r else None,
        "since": _iso(r.since) if r else None,
        "until": _iso(r.until) if r else None,
        "by": r.by if r else None,
        "ground": r.ground if r else None,
        "no_shows": len(p.no_shows),
    }
