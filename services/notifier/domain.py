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
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

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
    PersonRefused,
    Recipient,
)
from shared.policy import OfficePolicy


class Kind(StrEnum):
    CONFIRMATION = "confirmation"  # R05, R06 (KG): date, time and URL once coordinated
    NOTICE = "notice"  # R06 (HW): the day-before notice
    RECOORDINATION = "recoordination"  # R05: the wished time could not be met
    AWAITING = "awaiting_coordination"  # R05: the office coordinates by hand and will contact the person
    TERMS = "terms_change"  # R17 (HW 第14条): an announced change of the terms, before it applies
    CANCELLATION = "cancellation"  # R07
    NO_SHOW = "no_show"  # R08, R09
    REFUSAL = "refusal"  # R09, R13


#: Subjects of the kinds an office policy does not name (R06 names the confirmation/notice subject).
SUBJECT_LABELS: dict[Kind, str] = {
    Kind.RECOORDINATION: "実施日時の再調整のお願い",
    Kind.AWAITING: "実施日時の調整についてのお知らせ",
    Kind.TERMS: "利用規約の変更についてのお知らせ",
    Kind.CANCELLATION: "予約取消しのお知らせ",
    Kind.NO_SHOW: "予約をキャンセル扱いとしたお知らせ",
    Kind.REFUSAL: "今後のご利用についてのお知らせ",
}


class HeaderInjection(MessageError):
    def __init__(self, header: str) -> None:
        super().__init__("header-injection", f"control character in the {header} header value")


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
    return _about_booking(kind, policy, p, f"v{p.appointment.version}", p.appointment)


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
    return _about_booking(kind, policy, p, f"v{version}", p.appointment, reason=p.reason, channel=p.channel)


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
