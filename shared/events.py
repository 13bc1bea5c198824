"""Cross-service event contracts: one envelope, one payload model per event, a registry by routing key.

Event names are past tense and double as routing keys on the events exchange. The descriptions here
are what the generated AsyncAPI document shows, so they say who emits, who consumes and which
personal data travels (R12: only what the consumer needs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID, uuid4

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, ConfigDict, Field, ValidationError

from shared import safejson
from shared.clock import Clock
from shared.text import CleanText


def iso_only(value: Any) -> Any:
    """A time on the wire is ISO 8601 text with its offset: a bare number (seconds since 1970) is
    refused, not read as a time in 1970."""
    if isinstance(value, (int, float)):
        raise ValueError("a date and time in ISO 8601 with its offset is required")
    return value


#: An aware datetime normalised to UTC: stored and sent in UTC, shown in JST.
UtcDatetime = Annotated[AwareDatetime, BeforeValidator(iso_only), AfterValidator(lambda d: d.astimezone(UTC))]


class MessageError(Exception):
    """A message that cannot be processed as it stands: it is parked with this reason, never dropped."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UnknownEventType(MessageError):
    def __init__(self, type_: str) -> None:
        super().__init__("unknown-event-type", f"no contract for {type_!r}")


class InvalidEvent(MessageError):
    def __init__(self, detail: str) -> None:
        super().__init__("invalid-event", detail)


class Contract(CleanText):
    """Base of every payload: strict, so a misspelt field is an error, not a silent default; every
    string meets the text rules of `shared.text` (free-text fields are named in `PROSE`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Payload(Contract):
    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1

    @classmethod
    def routing_keys(cls) -> tuple[str, ...]:
        """The routing keys a message with this payload travels under: the type it is registered as.
        Every binding and subscription names the class, so each key is written once, on its class."""
        return (cls.TYPE,)


PayloadT = TypeVar("PayloadT", bound=Payload)

#: routing key -> payload model; filled by @event
REGISTRY: dict[str, type[Payload]] = {}


def event(type_: str, version: int = 1) -> Any:
    """Register a payload model under its routing key."""

    def register(cls: type[PayloadT]) -> type[PayloadT]:
        if type_ in REGISTRY:
            raise ValueError(f"event type {type_} registered twice")
        cls.TYPE = type_
        cls.VERSION = version
        REGISTRY[type_] = cls
        return cls

    return register


class Envelope(CleanText, Generic[PayloadT]):
    """What travels on the wire: identity, causality and the typed payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: UUID = Field(description="unique id; consumers dedupe on it")
    type: str = Field(description="routing key and registry name, e.g. booking.requested")
    version: int = Field(1, description="payload schema version")
    occurred_at: UtcDatetime = Field(description="when it happened, UTC")
    producer: str = Field(description="service that emitted it")
    correlation_id: UUID = Field(description="shared by every event of one booking's story")
    causation_id: UUID | None = Field(None, description="event_id of the message that caused this")
    office_id: str = Field(description="office the event belongs to")
    payload: PayloadT

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def new_event(
    payload: PayloadT,
    *,
    office_id: str,
    producer: str,
    clock: Clock,
    cause: Envelope[Any] | None = None,
    correlation_id: UUID | None = None,
    event_id: UUID | None = None,
) -> Envelope[PayloadT]:
    """Wrap a payload; a cause passes on its correlation id and becomes the causation id."""
    eid = event_id or uuid4()
    model: Any = Envelope[type(payload)]  # type: ignore[misc]
    envelope: Envelope[PayloadT] = model(
        event_id=eid,
        type=payload.TYPE,
        version=payload.VERSION,
        occurred_at=clock.now().astimezone(UTC),
        producer=producer,
        correlation_id=correlation_id or (cause.correlation_id if cause else eid),
        causation_id=cause.event_id if cause else None,
        office_id=office_id,
        payload=payload,
    )
    return envelope


@dataclass(frozen=True)
class Producer:
    """One service's events: its name and its clock stamp each. What a handler that emits events
    needs, rather than the whole runtime (`Runtime.producer`)."""

    service: str
    clock: Clock

    def event(
        self,
        payload: PayloadT,
        office_id: str,
        *,
        cause: Envelope[Any] | None = None,
        correlation_id: UUID | None = None,
    ) -> Envelope[PayloadT]:
        return new_event(
            payload,
            office_id=office_id,
            producer=self.service,
            clock=self.clock,
            cause=cause,
            correlation_id=correlation_id,
        )


def read_message(body: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """A message's JSON object, which names its `type`; anything else raises InvalidEvent."""
    try:
        data = body if isinstance(body, dict) else safejson.loads(body)
    except safejson.UnsafeJson as exc:  # permanent: parked at once, never retried
        raise InvalidEvent(f"{exc.field}: {exc.message}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise InvalidEvent("no envelope: an object with a string 'type' is required")
    return data


def parse_event(body: bytes | str | dict[str, Any]) -> Envelope[Any]:
    """Bytes to a typed envelope; an unknown type or invalid payload raises, never passes quietly."""
    data = read_message(body)
    model = REGISTRY.get(data["type"])
    if model is None:
        raise UnknownEventType(data["type"])
    try:
        return Envelope[model].model_validate(data)  # type: ignore[valid-type]
    except ValidationError as exc:
        raise InvalidEvent(_summarise(exc)) from exc


def _summarise(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)


# --------------------------------------------------------------------------- shared pieces


class TimeWindow(Contract):
    start: UtcDatetime = Field(description="start, UTC on the wire; shown in JST")
    end: UtcDatetime = Field(description="end, UTC on the wire")


class Recipient(Contract):
    """Personal data for the notifier only (R12): where and to whom the email goes."""

    name: str = Field(description="person's name as registered (for the salutation)")
    email: str = Field(description="address the office writes to (HW: the My Page address, R06)")


class Appointment(Contract):
    counsellor_id: str = Field(description="counsellor or commissioner coordinated (R05)")
    counsellor_name: str = Field(description="display name of the counsellor")
    start: UtcDatetime = Field(description="consultation start")
    end: UtcDatetime = Field(description="consultation end; at most 30 minutes after start (R01)")
    meeting_url: str = Field(description="join URL in the office's meeting app (R16)")
    app: str = Field(description="meeting app: teams, skype-for-business or teleoffice (R16)")
    version: int = Field(1, description="appointment version; a re-coordination increments it")
    late_reason: str | None = Field(
        None,
        description="R04: staff confirmed it later than the office's deadline, for this recorded reason "
        "(HW 第6条(1) 原則として); None: within the deadline. Only staff can; a portal never can",
    )
    counsellor_email: str | None = Field(
        None,
        description="the counsellor's work email: they are told of each assignment, change and cancellation",
    )
    meeting_id: str | None = Field(
        None, description="the app's meeting id, where the app has one to type in (pre-issued rooms)"
    )
    passcode: str | None = Field(None, description="the room's passcode, where the app has one")


def appointment_id(booking_id: str, version: int) -> str:
    """The id of version `version` of a booking's appointment (Graph's `externalId`, R16)."""
    return f"{booking_id}-v{version}"


class PersonBrief(Contract):
    """What the counsellor needs of the person for the session and nothing more (R12): the name, the
    topic, HW's job-seeker number. For the notifier only: audit keeps none of it (a person object)."""

    name: str
    topic: str | None = None
    jobseeker_number: str | None = None


#: why automatic coordination left a request to staff (R05, R16)
LeftReason = Literal["no_free_counsellor", "office_coordinates", "no_free_room", "meeting_refused"]


class Alternative(Contract):
    option_id: str = Field(description="id the person names to accept this time")
    start: UtcDatetime
    end: UtcDatetime
    counsellor_id: str


# --------------------------------------------------------------------------- booking service


@event("booking.requested")
class BookingRequested(Payload):
    """Booking accepted for coordination. booking -> scheduler, audit. No personal data."""

    booking_id: str
    windows: list[TimeWindow] = Field(description="wished windows, in order of preference")
    duration_minutes: int = Field(description="length asked for; at most 30 (R01)")
    area: str | None = Field(None, description="KG: Kushiro, Nemuro or Tokachi, from the address (R20)")
    interpreter: bool = Field(False, description="an interpreter or assistant attends (R15)")


@event("booking.rejected")
class BookingRejected(Payload):
    """A portal's request refused with its rule. booking -> portals, audit."""

    PROSE: ClassVar[frozenset[str]] = frozenset({"message"})

    request_id: str = Field(description="portal's idempotency key or message id")
    portal_id: str
    rule: str | None = Field(None, description="rule id, e.g. R04")
    field: str | None = Field(None, description="offending field, if any")
    message: str


@event("booking.confirmed")
class BookingConfirmed(Payload):
    """Appointment fixed and recorded on the booking. booking -> notifier (KG confirmation), audit."""

    booking_id: str
    appointment: Appointment
    recipient: Recipient
    terms_version: str = Field(description="terms version the person agreed to (R17)")
    previous: Appointment | None = Field(
        None, description="the appointment this one replaces, when staff moved the consultation (R05)"
    )
    person: PersonBrief | None = Field(None, description="for the counsellor's email (R12: notifier only)")


@event("booking.recoordination_proposed")
class BookingRecoordinationProposed(Payload):
    """Wished time could not be met; alternatives offered (R05). booking -> notifier, audit."""

    booking_id: str
    alternatives: list[Alternative]
    hold_expires_at: UtcDatetime
    recipient: Recipient
    terms_version: str


@event("booking.awaiting_coordination")
class BookingAwaitingCoordination(Payload):
    """The office coordinates a time by hand and will contact the person (R05, KG 第4条(2)
    改めて日程調整させていただきます): no time could be offered, or the person declined the
    proposed ones. booking -> notifier (where the office tells the person), audit."""

    booking_id: str
    reason: LeftReason | Literal["declined"]
    recipient: Recipient
    terms_version: str


@event("booking.terms_change_announced")
class BookingTermsChangeAnnounced(Payload):
    """R17 (HW 第14条): the office changes its terms without consent; a person whose consultation
    falls on or after the change is told what changes and when, before it applies. booking ->
    notifier, audit."""

    booking_id: str
    version: str = Field(description="the announced terms version")
    effective_from: date
    summary: str = Field(description="what changes, as the office words it")
    url: str | None = Field(None, description="where the full text is published")
    recipient: Recipient
    terms_version: str = Field(description="the version the person agreed to")


@event("booking.alternative_accepted")
class AlternativeAccepted(Payload):
    """The person chose one proposed time. booking -> scheduler."""

    booking_id: str
    option_id: str


@event("booking.alternative_declined")
class AlternativeDeclined(Payload):
    """The person declined every proposed time. booking -> scheduler (release holds)."""

    booking_id: str


@event("booking.notice_due")
class BookingNoticeDue(Payload):
    """The day-before notice is due for a booking still confirmed (R06). booking -> notifier."""

    booking_id: str
    appointment: Appointment
    recipient: Recipient
    terms_version: str


@event("booking.cancelled")
class BookingCancelled(Payload):
    """Cancelled by the person (R07), by staff, or deemed cancelled as a no-show (R08).
    booking -> scheduler (free the slot, disarm timers), notifier, audit."""

    booking_id: str
    reason: Literal["person", "staff", "no_show", "refused", "rejected"] = Field(
        description="person (R07), staff, no_show (R08), refused (R13), rejected (R04: the "
        "appointment was confirmed after the office's lead time; the person is told it cannot take place)"
    )
    channel: str | None = Field(None, description="phone, email or portal (R07)")
    recorded_by: str | None = None
    appointment: Appointment | None = None
    recipient: Recipient
    terms_version: str


@event("booking.attended")
class BookingAttended(Payload):
    """Joined, or contacted the office before the no-show mark (R08). booking -> scheduler, audit."""

    booking_id: str
    how: Literal["joined", "contacted"]
    at: UtcDatetime


@event("booking.completed")
class BookingCompleted(Payload):
    """The consultation took place; usage window for the records (R10). booking -> audit."""

    booking_id: str
    started_at: UtcDatetime
    ended_at: UtcDatetime


@event("person.refused")
class PersonRefused(Payload):
    """A person is refused further online consultations (R09 no-shows, R13 misconduct)."""

    PROSE: ClassVar[frozenset[str]] = frozenset({"reason"})

    person_key: str = Field(description="keyed-hash pseudonym of the person, never the raw identity")
    rule: Literal["R09", "R13"]
    reason: str
    until: UtcDatetime | None = Field(None, description="refusal expiry; none means until lifted")
    recipient: Recipient | None = None


@event("person.refusal_lifted")
class RefusalLifted(Payload):
    """Staff lifted a refusal (R09, R13). booking -> audit."""

    person_key: str
    lifted_by: str


@event("device.recorded")
class DeviceRecorded(Payload):
    """Device identification sent by a portal (R10). booking -> audit only, which pseudonymises (R11)."""

    booking_id: str | None = None
    portal_id: str
    user_agent: str | None = None
    ip_address: str | None = None
    device_id: str | None = None
    app_version: str | None = None
    observed_at: UtcDatetime


@event("access.logged")
class AccessLogged(Payload):
    """One HTTP request to a service API (R10 access history). every service -> audit."""

    service: str
    actor: str = Field(description="credential id: portal, staff member or auditor; never a secret")
    credential: str | None = Field(
        None, description="the key id the request came with (R10; actor: the person)"
    )
    method: str
    route: str = Field(description="route template, not the raw path")
    status: int
    latency_ms: float
    request_id: str
    at: UtcDatetime


# --------------------------------------------------------------------------- scheduler service
#
# What the scheduler tells booking. Booking records it on the booking and tells the others in events of
# its own, so the classes are named for the scheduler's step, not for booking's outcome: SlotAssigned
# -> BookingConfirmed, AlternativesHeld -> BookingRecoordinationProposed, NoticeTimerFired ->
# BookingNoticeDue, NoShow -> BookingCancelled. Their wire names stay `appointment.*`.


@event("appointment.confirmed")
class SlotAssigned(Payload):
    """A counsellor, a time and a meeting URL are fixed (R05, R16). scheduler -> booking, audit."""

    booking_id: str
    appointment: Appointment


@event("appointment.recoordination_proposed")
class AlternativesHeld(Payload):
    """No free slot in the wished windows; alternatives held tentatively (R05). scheduler -> booking."""

    booking_id: str
    alternatives: list[Alternative]
    hold_expires_at: UtcDatetime


@event("appointment.left_to_staff")
class LeftToStaff(Payload):
    """Nothing to offer automatically: no counsellor free in the wished windows nor on the days
    searched, or the office proposes times only by hand (R05). Staff coordinate; the booking waits
    for them and is never sent a proposal without times. scheduler -> booking."""

    booking_id: str
    reason: LeftReason = Field(
        description="no counsellor free; the office coordinates by hand; no pre-issued room free then "
        "(R16); the meeting service refused to create the meeting (R16)"
    )


@event("appointment.hold_expired")
class HoldExpired(Payload):
    """Proposed alternatives were not taken in time and are released. scheduler -> booking."""

    booking_id: str
    due_at: UtcDatetime | None = Field(None, description="when the hold ended")
    lateness_seconds: float = Field(0.0, description="how late the timer fired (e.g. after a restart)")


@event("appointment.notice_due")
class NoticeTimerFired(Payload):
    """The notice timer fired (R06). scheduler -> booking."""

    booking_id: str
    appointment_version: int
    due_at: UtcDatetime
    lateness_seconds: float = 0.0


@event("appointment.no_show")
class NoShow(Payload):
    """Grace passed after start with neither joined nor contacted (R08). scheduler -> booking."""

    booking_id: str
    appointment_version: int
    start: UtcDatetime
    grace_minutes: int
    grace_seconds: float | None = Field(None, description="exact grace; demo offices use seconds")
    due_at: UtcDatetime | None = Field(None, description="start + grace")
    lateness_seconds: float = 0.0


@event("appointment.joined")
class MeetingJoined(Payload):
    """R08: at the no-show mark, the meeting's attendance records (Teams, through Microsoft Graph)
    show the person joined in time: attended without staff action. scheduler -> booking."""

    booking_id: str
    appointment_version: int
    at: UtcDatetime = Field(description="when the person first joined")


# --------------------------------------------------------------------------- notifier service


@event("notification.sent")
class NotificationSent(Payload):
    """An email was accepted by the SMTP server. notifier -> audit."""

    booking_id: str = Field(description="booking the email is about; empty for a refusal (person-level)")
    kind: str = Field(
        description="the notifier's kind: confirmation, notice, recoordination, awaiting_coordination, "
        "terms_change, cancellation, no_show, refusal, change; the counsellor's counsellor_assignment, "
        "counsellor_change, counsellor_cancellation and counsellor_agenda"
    )
    delivery_key: str = Field(description="booking/kind/version: one notice, whatever event brought it")
    message_id: str = Field(description="Message-ID, derived from the delivery key (duplicates share it)")
    person_key: str | None = Field(None, description="refusal notices: the person's keyed-hash pseudonym")


@event("notification.failed")
class NotificationFailed(Payload):
    """An email could not be delivered; parked for ops. notifier -> audit."""

    PROSE: ClassVar[frozenset[str]] = frozenset({"error"})

    booking_id: str
    kind: str
    delivery_key: str
    error: str
    permanent: bool = Field(description="true: undeliverable as it stands (bad address, 5xx)")
    person_key: str | None = Field(None, description="refusal notices: the person's keyed-hash pseudonym")


def dumps(obj: Any) -> str:
    """JSON for logs and documents, with datetimes in ISO form."""
    return json.dumps(obj, default=lambda o: o.isoformat() if isinstance(o, datetime) else str(o))
