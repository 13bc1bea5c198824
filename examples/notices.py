"""Example events for every kind of notice: to preview the templates and to drive tests and the demo.

Times are around 2026-11-22 (a Sunday): the appointment is Wednesday 2026-11-25 10:00–10:30 JST.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from uuid import uuid4

from services.notifier.domain import Kind
from shared.clock import JST, Clock, FixedClock
from shared.events import (
    Alternative,
    Appointment,
    BookingAwaitingCoordination,
    BookingCancelled,
    BookingConfirmed,
    BookingNoticeDue,
    BookingRecoordinationProposed,
    BookingTermsChangeAnnounced,
    Envelope,
    Payload,
    PersonBrief,
    PersonRefused,
    Recipient,
    new_event,
)
from shared.policy import FormField, OfficePolicy

START = datetime(2026, 11, 25, 10, 0, tzinfo=JST)
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=JST)

#: the event that makes the notifier send each kind
EVENT_OF_KIND = {
    Kind.CONFIRMATION: "booking.confirmed",
    Kind.NOTICE: "booking.notice_due",
    Kind.RECOORDINATION: "booking.recoordination_proposed",
    Kind.AWAITING: "booking.awaiting_coordination",
    Kind.TERMS: "booking.terms_change_announced",
    Kind.CANCELLATION: "booking.cancelled",
    Kind.NO_SHOW: "booking.cancelled",
    Kind.REFUSAL: "person.refused",
    Kind.CHANGE: "booking.confirmed",
}


def join_url_base(policy: OfficePolicy) -> str:
    """Where the samples' join URLs start: a host of the office's first app (they open nothing)."""
    host = next(iter(policy.default_meeting.accepted_hosts()), "meet.example.org")
    return f"https://{host}/l/meetup-join/sample/"


def sample_join_url(policy: OfficePolicy, booking_id: str, version: int = 1) -> str:
    return f"{join_url_base(policy)}{booking_id}-v{version}"


def appointment(
    policy: OfficePolicy,
    booking_id: str,
    *,
    start: datetime = START,
    version: int = 1,
    counsellor_id: str = "c-001",
    counsellor_name: str = "相談員 佐藤",
    counsellor_email: str | None = None,
    meeting_id: str | None = None,
    passcode: str | None = None,
) -> Appointment:
    meeting = policy.default_meeting
    return Appointment(
        counsellor_id=counsellor_id,
        counsellor_name=counsellor_name,
        start=start,
        end=start + timedelta(minutes=30),
        meeting_url=sample_join_url(policy, booking_id, version),
        app=meeting.app.value,
        version=version,
        counsellor_email=counsellor_email,
        meeting_id=meeting_id,
        passcode=passcode,
    )


def brief(policy: OfficePolicy, name: str = "山田 太郎") -> PersonBrief:
    """What booking tells the counsellor of the person: HW's form has a topic and a job-seeker number."""
    hw = FormField.JOBSEEKER_NUMBER in policy.form
    return PersonBrief(
        name=name,
        topic="応募書類の書き方について" if FormField.TOPIC in policy.form else None,
        jobseeker_number="1401-123456-7" if hw else None,
    )


def payload(
    kind: Kind,
    policy: OfficePolicy,
    *,
    booking_id: str | None = None,
    recipient: Recipient | None = None,
    version: int = 1,
    **overrides: Any,
) -> Payload:
    """A payload of the event behind this kind; `overrides` replace fields."""
    bid = booking_id or f"bk-{uuid4().hex[:10]}"
    who = recipient or Recipient(name="山田 太郎", email="taro.yamada@example.org")
    terms = policy.terms[-1].version
    appt = appointment(policy, bid, version=version)
    fields: dict[str, Any]
    if kind in (Kind.CONFIRMATION, Kind.NOTICE):
        fields = {"booking_id": bid, "appointment": appt, "recipient": who, "terms_version": terms}
        model: type[Payload] = BookingConfirmed if kind is Kind.CONFIRMATION else BookingNoticeDue
    elif kind is Kind.CHANGE:  # staff moved it to the next day, same counsellor (R05)
        model = BookingConfirmed
        fields = {
            "booking_id": bid,
            "appointment": appointment(policy, bid, start=START + timedelta(days=1), version=version + 1),
            "previous": appt,
            "recipient": who,
            "terms_version": terms,
        }
    elif kind is Kind.RECOORDINATION:
        model = BookingRecoordinationProposed
        fields = {
            "booking_id": bid,
            "alternatives": [
                Alternative(
                    option_id=f"opt-{i}", start=s, end=s + timedelta(minutes=30), counsellor_id="c-002"
                )
                for i, s in enumerate((START + timedelta(days=1, hours=4), START + timedelta(days=2)), 1)
            ],
            "hold_expires_at": NOW + timedelta(days=2),
            "recipient": who,
            "terms_version": terms,
        }
    elif kind is Kind.AWAITING:
        model = BookingAwaitingCoordination
        fields = {"booking_id": bid, "reason": "no_free_counsellor", "recipient": who, "terms_version": terms}
    elif kind is Kind.TERMS:
        model = BookingTermsChangeAnnounced
        fields = {
            "booking_id": bid,
            "version": "2027-04-01",
            "effective_from": date(2027, 4, 1),
            "summary": "第6条(1)の予約確定の期限を改めます",
            "url": "https://example.go.jp/terms/2027-04-01",
            "recipient": who,
            "terms_version": terms,
        }
    elif kind in (Kind.CANCELLATION, Kind.NO_SHOW):
        model = BookingCancelled
        reason = "no_show" if kind is Kind.NO_SHOW else "person"
        channel = None if kind is Kind.NO_SHOW else "phone"
        fields = {
            "booking_id": bid,
            "reason": reason,
            "channel": channel,
            "appointment": appt,
            "recipient": who,
            "terms_version": terms,
        }
    else:
        model = PersonRefused
        fields = {
            "person_key": f"pk-{bid}",
            "rule": "R09",
            "reason": f"連絡のないキャンセルが{policy.refusal.no_shows}回となったため",
            "until": NOW + policy.refusal.refuse_for,
            "recipient": who,
        }
    fields.update(overrides)
    return model(**fields)


def event(kind: Kind, policy: OfficePolicy, *, clock: Clock | None = None, **kwargs: Any) -> Envelope[Any]:
    """An envelope as the booking service would emit it."""
    return new_event(
        payload(kind, policy, **kwargs),
        office_id=policy.office_id,
        producer="booking",
        clock=clock or FixedClock(NOW),
    )


def counsellor_event(kind: Kind, policy: OfficePolicy, **kwargs: Any) -> Envelope[Any]:
    """The event behind a counsellor's email (issue 17), with a counsellor who has a work address:
    an assignment (confirmed), a change (moved a day, same counsellor), a cancellation."""
    bid = kwargs.pop("booking_id", None) or f"bk-{uuid4().hex[:10]}"
    work = "sato@counsellors.example.org"
    appt = appointment(policy, bid, counsellor_email=work)
    if kind is Kind.COUNSELLOR_CHANGE:
        moved = appointment(policy, bid, start=START + timedelta(days=1), version=2, counsellor_email=work)
        return event(
            Kind.CONFIRMATION, policy, booking_id=bid, appointment=moved, previous=appt, person=brief(policy)
        )
    if kind is Kind.COUNSELLOR_CANCELLATION:
        return event(Kind.CANCELLATION, policy, booking_id=bid, appointment=appt, **kwargs)
    return event(Kind.CONFIRMATION, policy, booking_id=bid, appointment=appt, person=brief(policy), **kwargs)
