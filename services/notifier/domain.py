"""What the notifier sends for which event, keyed so that one notice is one email. Pure: no I/O.

The delivery key names a notice, not a message: booking, kind and appointment version (or, where no
appointment exists yet, a digest of what is proposed). Every event that means the same notice maps to
the same key, whatever its event id, so a redelivered or re-emitted event sends nothing new. The
Message-ID is derived from the key, so even the one duplicate we cannot rule out (a crash after the
SMTP server accepted the message and before the record was marked) carries the same Message-ID and is
recognisable at the receiver.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import date
from enum import StrEnum
from typing import Any, Literal

from shared.events import (
    Appointment,
    BookingAwaitingCoordination,
    BookingCancelled,
    BookingConfirmed,
    BookingNoticeDue,
    BookingRecoordinationProposed,
    BookingTermsChangeAnnounced,
    Envelope,
    MessageError,
    Payload,
    PersonBrief,
    PersonRefused,
    Recipient,
)
from shared.policy import FormField, OfficePolicy


class Kind(StrEnum):
    CONFIRMATION = "confirmation"  # R05, R06 (KG): date, time and URL once coordinated
    NOTICE = "notice"  # R06 (HW): the day-before notice
    RECOORDINATION = "recoordination"  # R05: the wished time could not be met
    AWAITING = "awaiting_coordination"  # R05: the office coordinates by hand and will contact the person
    TERMS = "terms_change"  # R17 (HW 第14条): an announced change of the terms, before it applies
    CANCELLATION = "cancellation"  # R07
    NO_SHOW = "no_show"  # R08, R09
    REFUSAL = "refusal"  # R09, R13
    CHANGE = "change"  # R05: staff moved a confirmed consultation; the new date, time and URL
    # The counsellor's side (issue 17): their work email, with only what the session needs (R12)
    COUNSELLOR_ASSIGNMENT = "counsellor_assignment"  # a consultation is theirs (new, or moved to them)
    COUNSELLOR_CHANGE = "counsellor_change"  # their consultation moved to another time
    COUNSELLOR_CANCELLATION = "counsellor_cancellation"  # cancelled, or moved to another counsellor
    COUNSELLOR_AGENDA = "counsellor_agenda"  # the next open day's consultations, once a day


#: the kinds written to a counsellor rather than to the person
COUNSELLOR_KINDS = frozenset(
    {Kind.COUNSELLOR_ASSIGNMENT, Kind.COUNSELLOR_CHANGE, Kind.COUNSELLOR_CANCELLATION, Kind.COUNSELLOR_AGENDA}
)


#: Subjects of the kinds an office policy does not name (R06 names the confirmation/notice subject).
SUBJECT_LABELS: dict[Kind, str] = {
    Kind.RECOORDINATION: "実施日時の再調整のお願い",
    Kind.AWAITING: "実施日時の調整についてのお知らせ",
    Kind.TERMS: "利用規約の変更についてのお知らせ",
    Kind.CANCELLATION: "予約取消しのお知らせ",
    Kind.NO_SHOW: "予約をキャンセル扱いとしたお知らせ",
    Kind.REFUSAL: "今後のご利用についてのお知らせ",
    Kind.CHANGE: "実施日時の変更のお知らせ",
    Kind.COUNSELLOR_ASSIGNMENT: "担当する相談のお知らせ",
    Kind.COUNSELLOR_CHANGE: "担当する相談の日時変更のお知らせ",
    Kind.COUNSELLOR_CANCELLATION: "担当する相談の取消しのお知らせ",
    Kind.COUNSELLOR_AGENDA: "相談予定のお知らせ",
}


class HeaderInjection(MessageError):
    def __init__(self, header: str) -> None:
        super().__init__("header-injection", f"control character in the {header} header value")


@dataclass(frozen=True)
class Invite:
    """The calendar entry an email carries (RFC 5546 iTIP over email, RFC 6047): what it says about
    which appointment. One UID per booking and recipient side, the same across versions, so a move
    updates the entry already in the calendar instead of adding one."""

    method: Literal["REQUEST", "CANCEL"]
    uid: str
    sequence: int
    appointment: Appointment
    booking_id: str


@dataclass(frozen=True)
class Notice:
    """One email to send: decided from one event and the office policy."""

    kind: Kind
    key: str
    office_id: str
    booking_id: str
    recipient: Recipient
    subject: str
    appointment: Appointment | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    person_key: str | None = None
    previous: Appointment | None = None  # a change: the appointment this one replaces
    invite: Invite | None = None

    @property
    def to_counsellor(self) -> bool:
        return self.kind in COUNSELLOR_KINDS


#: the events the notifier consumes (shared/topology.py NOTIFIER binds their routing keys)
NOTICE_EVENTS: tuple[type[Payload], ...] = (
    BookingConfirmed,
    BookingRecoordinationProposed,
    BookingAwaitingCoordination,
    BookingTermsChangeAnnounced,
    BookingNoticeDue,
    BookingCancelled,
    PersonRefused,
)


def plan(event: Envelope[Any], policy: OfficePolicy) -> Notice | None:
    """The notice an event calls for under this office's policy, or None when it calls for none."""
    p = event.payload
    if isinstance(p, BookingConfirmed):
        # R06: HW's only email is the day-before notice; KG writes once the time is coordinated.
        if not policy.notice.on_confirmation:
            return None
        if p.previous is not None:  # staff moved it (R05): the same calendar entry, a new time
            return _with_invite(
                _about_booking(Kind.CHANGE, policy, p, f"v{p.appointment.version}", p.appointment),
                previous=p.previous,
            )
        return _booking_notice(Kind.CONFIRMATION, policy, p)
    if isinstance(p, BookingNoticeDue):
        # R06: only offices that send a notice before the day (or demo offices with before_start).
        if not (policy.notice.day_before or policy.notice.before_start):
            return None
        return _booking_notice(Kind.NOTICE, policy, p)
    if isinstance(p, BookingRecoordinationProposed):
        return _recoordination(policy, p)
    if isinstance(p, BookingAwaitingCoordination):
        return _awaiting(policy, p, event)
    if isinstance(p, BookingTermsChangeAnnounced):
        return _about_booking(
            Kind.TERMS,
            policy,
            p,
            f"t{p.version}",
            None,
            new_version=p.version,
            effective_from=p.effective_from,
            change=p.summary,
            url=p.url,
        )
    if isinstance(p, BookingCancelled):
        return _cancellation(policy, p)
    if isinstance(p, PersonRefused):
        # R17: a refusal is not tied to one booking; name the terms in force when it was decided.
        return _refusal(policy, p, policy.terms_in_force(event.occurred_at).version)
    return None


AboutBooking = (
    BookingConfirmed
    | BookingNoticeDue
    | BookingRecoordinationProposed
    | BookingAwaitingCoordination
    | BookingTermsChangeAnnounced
    | BookingCancelled
)


def _about_booking(
    kind: Kind,
    policy: OfficePolicy,
    p: AboutBooking,
    round_: str,
    appointment: Appointment | None,
    **facts: Any,
) -> Notice:
    """A notice about one booking, keyed by booking, kind and round: one email per round however
    often its event arrives; the terms version the person agreed to goes with it (R17)."""
    return Notice(
        kind=kind,
        key=delivery_key(p.booking_id, kind, round_),
        office_id=policy.office_id,
        booking_id=p.booking_id,
        recipient=p.recipient,
        subject=subject(policy, kind),
        appointment=appointment,
        facts={"terms_version": p.terms_version, **facts},
    )


def _booking_notice(kind: Kind, policy: OfficePolicy, p: BookingConfirmed | BookingNoticeDue) -> Notice:
    return _with_invite(_about_booking(kind, policy, p, f"v{p.appointment.version}", p.appointment))


def _recoordination(policy: OfficePolicy, p: BookingRecoordinationProposed) -> Notice:
    # No appointment version yet: the proposal itself (options and hold) names this round.
    proposal = "|".join(sorted(a.option_id for a in p.alternatives)) + "|" + p.hold_expires_at.isoformat()
    return _about_booking(
        Kind.RECOORDINATION,
        policy,
        p,
        "p" + _digest(proposal)[:12],
        None,
        alternatives=list(p.alternatives),
        hold_expires_at=p.hold_expires_at,
    )


def _awaiting(policy: OfficePolicy, p: BookingAwaitingCoordination, event: Envelope[Any]) -> Notice:
    # Each time staff take over is its own notice (after a decline, again after a later one): the
    # event that says so names the round; a redelivery of it is the same notice.
    round_ = "e" + _digest(str(event.event_id))[:12]
    return _about_booking(Kind.AWAITING, policy, p, round_, None, reason=p.reason)


def _cancellation(policy: OfficePolicy, p: BookingCancelled) -> Notice:
    kind = Kind.NO_SHOW if p.reason == "no_show" else Kind.CANCELLATION  # R08
    version = p.appointment.version if p.appointment else 0
    return _with_invite(
        _about_booking(kind, policy, p, f"v{version}", p.appointment, reason=p.reason, channel=p.channel)
    )


def _refusal(policy: OfficePolicy, p: PersonRefused, terms_version: str) -> Notice | None:
    if p.recipient is None:
        return None  # nobody to write to; the refusal itself is in the audit store
    until = p.until.isoformat() if p.until else "open"
    return Notice(
        kind=Kind.REFUSAL,
        key=delivery_key(f"person:{p.person_key}", Kind.REFUSAL, f"{p.rule}-{_digest(until)[:12]}"),
        office_id=policy.office_id,
        booking_id="",
        person_key=p.person_key,
        recipient=p.recipient,
        subject=subject(policy, Kind.REFUSAL),
        facts={"rule": p.rule, "reason": p.reason, "until": p.until, "terms_version": terms_version},
    )


# --------------------------------------------------------------------------- calendar entries

#: kinds whose email cancels the calendar entry (a no-show is a deemed cancellation, R08)
CANCELLING = frozenset({Kind.CANCELLATION, Kind.NO_SHOW, Kind.COUNSELLOR_CANCELLATION})


def person_uid(booking_id: str, office_id: str) -> str:
    """The person's calendar entry for a booking: one UID whatever the appointment version."""
    return f"{booking_id}@{office_id}.consult"


def counsellor_uid(booking_id: str, counsellor_id: str, office_id: str) -> str:
    """The counsellor's entry: their own UID (a move to another counsellor cancels one entry and
    creates another, and a shared office calendar never sees one UID both cancelled and booked)."""
    return f"{booking_id}.{counsellor_id}@{office_id}.consult"


def sequence(appointment: Appointment, method: str) -> int:
    """SEQUENCE: the appointment version, which rises with each change. A cancellation changes the
    entry's STATUS, which RFC 5545 (3.8.7.4) counts as a revision: one above the version it cancels,
    never below the last request (a move to another counsellor yields a version at least that high)."""
    return appointment.version + (1 if method == "CANCEL" else 0)


def _with_invite(notice: Notice, *, previous: Appointment | None = None) -> Notice:
    """The notice with its calendar entry (none where no appointment exists yet)."""
    a = notice.appointment
    if a is None:
        return notice
    method: Literal["REQUEST", "CANCEL"] = "CANCEL" if notice.kind in CANCELLING else "REQUEST"
    if notice.to_counsellor:
        uid = counsellor_uid(notice.booking_id, a.counsellor_id, notice.office_id)
    else:
        uid = person_uid(notice.booking_id, notice.office_id)
    invite = Invite(method, uid, sequence(a, method), a, notice.booking_id)
    return replace(notice, invite=invite, previous=previous or notice.previous)


# --------------------------------------------------------------------------- the counsellor's side


def plan_all(event: Envelope[Any], policy: OfficePolicy) -> list[Notice]:
    """Every email an event calls for: the person's (if any), then the counsellors'. Each has its own
    delivery key, so each goes once however often the event comes."""
    person = plan(event, policy)
    return ([person] if person else []) + plan_counsellors(event, policy)


def plan_counsellors(event: Envelope[Any], policy: OfficePolicy) -> list[Notice]:
    """The counsellors' emails for an event: an assignment (a new appointment, or one moved to them),
    an update of the time (moved, same counsellor), a cancellation (cancelled, or moved to another
    counsellor). A counsellor without a work email gets none."""
    p = event.payload
    if isinstance(p, BookingConfirmed):
        brief = p.person or PersonBrief(name=p.recipient.name)  # at least whom they will talk to
        a, before = p.appointment, p.previous
        if before is not None and before.counsellor_id == a.counsellor_id:
            out = [_to_counsellor(Kind.COUNSELLOR_CHANGE, policy, p.booking_id, a, brief, previous=before)]
        else:
            out = [_to_counsellor(Kind.COUNSELLOR_ASSIGNMENT, policy, p.booking_id, a, brief)]
            if before is not None:
                out.append(
                    _to_counsellor(
                        Kind.COUNSELLOR_CANCELLATION, policy, p.booking_id, before, brief, reason="moved"
                    )
                )
        return [n for n in out if n is not None]
    if isinstance(p, BookingCancelled) and p.appointment is not None:
        # booking.cancelled carries no brief: the person's name is all the counsellor is told
        brief = PersonBrief(name=p.recipient.name)
        notice = _to_counsellor(
            Kind.COUNSELLOR_CANCELLATION, policy, p.booking_id, p.appointment, brief, reason=p.reason
        )
        return [notice] if notice else []
    return []


def counsellor_brief(brief: PersonBrief, policy: OfficePolicy) -> dict[str, str | None]:
    """What of the person a counsellor's email shows (R12): the name, the topic if given, and the
    job-seeker number only where the office's form asks for one (HW)."""
    number = brief.jobseeker_number if FormField.JOBSEEKER_NUMBER in policy.form else None
    return {"name": brief.name, "topic": brief.topic or None, "jobseeker_number": number or None}


def _to_counsellor(
    kind: Kind,
    policy: OfficePolicy,
    booking_id: str,
    appointment: Appointment,
    brief: PersonBrief,
    *,
    previous: Appointment | None = None,
    reason: str | None = None,
) -> Notice | None:
    if not appointment.counsellor_email:
        return None
    notice = Notice(
        kind=kind,
        key=delivery_key(booking_id, kind, f"v{appointment.version}"),
        office_id=policy.office_id,
        booking_id=booking_id,
        recipient=Recipient(name=appointment.counsellor_name, email=appointment.counsellor_email),
        subject=subject(policy, kind),
        appointment=appointment,
        facts={"person": counsellor_brief(brief, policy), "reason": reason},
    )
    return _with_invite(notice, previous=previous)


def agenda_key(counsellor_id: str, day: date) -> str:
    """One agenda per counsellor and day, whichever replica or tick sends it."""
    return delivery_key(f"counsellor:{counsellor_id}", Kind.COUNSELLOR_AGENDA, day.isoformat())


def subject(policy: OfficePolicy, kind: Kind) -> str:
    if kind in (Kind.CONFIRMATION, Kind.NOTICE):
        return policy.notice.subject  # R06: HW exactly 「オンライン職業相談」
    return f"【{policy.service_name}】{SUBJECT_LABELS[kind]}"


def delivery_key(subject_id: str, kind: Kind, version: str) -> str:
    return f"{subject_id}/{kind.value}/{version}"


def message_id(key: str, domain: str) -> str:
    """A Message-ID that is a function of the delivery key: a duplicate is recognisable as one."""
    return f"<{_digest(key)[:32]}.notice@{domain}>"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- headers

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")


def check_header(name: str, value: str) -> str:
    """Refuse a header value that could end the header: CR, LF or any control character."""
    if _CONTROL.search(value) or len(value) > 900:
        raise HeaderInjection(name)
    return value


APP_LABELS = {
    "teams": "Microsoft Teams",
    "skype-for-business": "Skype for Business",
    "teleoffice": "TeleOffice",
}


def app_label(app: str) -> str:
    """R16: the meeting app as the office's terms name it."""
    return APP_LABELS.get(app, app)


def check_meeting_url(url: str) -> str:
    """R16: a join link is an https URL; anything else (javascript:, http:) is not put in a mail."""
    if not re.fullmatch(r"https://[^\s<>\"']+", url):
        raise MessageError("invalid-meeting-url", "the meeting URL must be an https URL")
    return url
