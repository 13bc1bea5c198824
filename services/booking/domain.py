"""The life of a booking: its states, the legal transitions and the rules applied on the way.

Plain Python, no I/O. Each action changes the booking and returns the events it causes; the caller
stores both in one write (outbox). An action that the state does not allow raises IllegalTransition
(HTTP 409); one a rule forbids raises RuleViolation with the rule id (HTTP 409).

requested ─┬─> confirmed ─> attended ─> completed
           ├─> recoordination_proposed ─┬─> alternative_accepted ─> confirmed
           │                            └─> awaiting_coordination (declined, or the hold expired)
           └─> awaiting_coordination (nothing to offer: staff coordinate) ─┬─> confirmed
                                                                             ├─> recoordination_proposed
                                                                             └─> requested (new windows)
any active state ─> cancelled (person R07, staff, no-show R08, refused R13) or rejected (R04)

A person who declines the proposed times is coordinated again (R05, KG 第4条(2) 改めて日程調整
させていただきます): the booking waits for staff, who propose or confirm, or for the person's new
wished windows, with which it is requested again and coordinated as a new request. `declined` is no
longer reached (bookings from before this rule keep it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from shared.calendar import OfficeCalendar, jst_date
from shared.clock import format_jst
from shared.commands import FieldError
from shared.events import (
    Alternative,
    AlternativeAccepted,
    AlternativeDeclined,
    Appointment,
    BookingAttended,
    BookingAwaitingCoordination,
    BookingCancelled,
    BookingCompleted,
    BookingConfirmed,
    BookingNoticeDue,
    BookingRecoordinationProposed,
    BookingTermsChangeAnnounced,
    BookingWindowsChanged,
    LeftReason,
    Payload,
    PersonBrief,
    Recipient,
    TimeWindow,
)
from shared.policy import Channel, OfficePolicy, TermsVersion
from shared.wording import how_to_cancel


class Status(StrEnum):
    REQUESTED = "requested"
    RECOORDINATION_PROPOSED = "recoordination_proposed"
    ALTERNATIVE_ACCEPTED = "alternative_accepted"
    AWAITING_COORDINATION = "awaiting_coordination"
    DECLINED = "declined"
    CONFIRMED = "confirmed"
    ATTENDED = "attended"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


S = Status
#: the history note of the person's new wished windows (R05)
WINDOWS_NOTE = "new wished windows"
#: coordination still open or appointment ahead: these can be cancelled and confirmed
OPEN = frozenset({S.REQUESTED, S.RECOORDINATION_PROPOSED, S.ALTERNATIVE_ACCEPTED, S.AWAITING_COORDINATION})
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.REQUESTED: frozenset(
        {S.CONFIRMED, S.RECOORDINATION_PROPOSED, S.AWAITING_COORDINATION, S.CANCELLED, S.REJECTED}
    ),
    S.RECOORDINATION_PROPOSED: frozenset(
        {S.ALTERNATIVE_ACCEPTED, S.AWAITING_COORDINATION, S.CONFIRMED, S.CANCELLED}
    ),
    S.ALTERNATIVE_ACCEPTED: frozenset({S.CONFIRMED, S.AWAITING_COORDINATION, S.CANCELLED, S.REJECTED}),
    S.AWAITING_COORDINATION: frozenset(
        {S.CONFIRMED, S.RECOORDINATION_PROPOSED, S.REQUESTED, S.CANCELLED, S.REJECTED}
    ),
    S.CONFIRMED: frozenset({S.CONFIRMED, S.ATTENDED, S.CANCELLED, S.REJECTED}),
    S.ATTENDED: frozenset({S.COMPLETED, S.CANCELLED}),
    S.DECLINED: frozenset(),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}


class DomainError(Exception):
    pass


class IllegalTransition(DomainError):
    def __init__(self, status: Status, action: str) -> None:
        super().__init__(f"a booking that is {status.value} cannot be {action}")
        self.status = status
        self.action = action


class InvalidFields(DomainError):
    """What was sent fails the office's rules field by field (HTTP 422: each field with its rule id)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message} ({e.rule})" for e in errors))
        self.errors = errors


class RuleViolation(DomainError):
    """A rule forbids what was asked; `details` says what to do instead (e.g. how to cancel)."""

    def __init__(self, rule: str, message: str, field: str | None = None, **details: Any) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message
        self.field = field
        self.details = details


@dataclass
class Person:
    """Personal data of the booking, decrypted (stored sealed, R12)."""

    name: str
    name_kana: str | None = None
    address: str | None = None
    phone: str | None = None
    email: str | None = None
    jobseeker_number: str | None = None
    topic: str | None = None
    notice_email: str | None = None  # HW: the My Page address the notice goes to (R06)

    def recipient(self) -> Recipient:
        return Recipient(name=self.name, email=self.notice_email or self.email or "")

    def brief(self) -> PersonBrief:
        """What the counsellor needs for the session: no address, phone or email (R12)."""
        return PersonBrief(name=self.name, topic=self.topic, jobseeker_number=self.jobseeker_number)


@dataclass
class Window:
    start: datetime
    end: datetime


@dataclass
class Attendance:
    how: Literal["joined", "contacted"]
    at: datetime
    recorded_by: str


@dataclass
class IdentityCheck:
    """Staff confirmed (or could not confirm) at the session that the person is who booked (KG 第4条(1))."""

    method: Literal["name_and_contact", "photo_id", "jobseeker_card", "other"]
    confirmed: bool
    at: datetime
    recorded_by: str


@dataclass
class Cancellation:
    reason: Literal["person", "staff", "no_show", "refused", "rejected"]
    at: datetime
    channel: str | None = None
    recorded_by: str | None = None
    note: str | None = None


@dataclass
class Change:
    status: Status
    at: datetime
    note: str = ""


@dataclass
class Booking:
    booking_id: str
    office_id: str
    portal_id: str
    request_id: str
    correlation_id: str
    status: Status
    created_at: datetime
    updated_at: datetime
    windows: list[Window]
    duration_minutes: int
    person: Person
    person_key: str
    terms_version: str
    terms_agreed_at: datetime
    companions: list[str] = field(default_factory=list)
    area: str | None = None
    appointment: Appointment | None = None
    alternatives: list[Alternative] = field(default_factory=list)
    hold_expires_at: datetime | None = None
    attendance: Attendance | None = None
    identity_check: IdentityCheck | None = None
    cancellation: Cancellation | None = None
    completion: Window | None = None
    rejection: dict[str, str] | None = None
    notices_sent: list[int] = field(default_factory=list)
    terms_notices: list[str] = field(default_factory=list)  # R17: announced versions told of
    history: list[Change] = field(default_factory=list)
    version: int = 0
    placed: dict[str, Any] = field(default_factory=dict)  # the store's: where this version is listed

    # ----------------------------------------------------------------- helpers

    def _move(self, to: Status, now: datetime, note: str = "") -> None:
        if to not in TRANSITIONS[self.status]:
            raise IllegalTransition(self.status, to.value)
        self.status = to
        self.updated_at = now
        self.history.append(Change(to, now, note))

    @property
    def consultation_day(self) -> date | None:
        """The JST date of the appointment, once there is one."""
        return jst_date(self.appointment.start) if self.appointment else None

    def _cancelled(self) -> BookingCancelled:
        c = self.cancellation
        assert c is not None
        return BookingCancelled(
            reason=c.reason,
            channel=c.channel,
            recorded_by=c.recorded_by,
            appointment=self.appointment,
            **self._to_person(),
        )

    def _to_person(self) -> dict[str, Any]:
        """What every event the person hears of carries: the booking, to whom, under which terms (R17)."""
        return {
            "booking_id": self.booking_id,
            "recipient": self.person.recipient(),
            "terms_version": self.terms_version,
        }

    # ----------------------------------------------------------------- coordination (R05)

    def confirm(self, appointment: Appointment, now: datetime, calendar: OfficeCalendar) -> list[Payload]:
        """The scheduler fixed a time; an older or repeated version changes nothing."""
        if self.appointment is not None and appointment.version <= self.appointment.version:
            return []
        if self.status not in OPEN | {S.CONFIRMED}:
            return []  # cancelled meanwhile: the scheduler frees the slot on booking.cancelled
        late = not calendar.can_confirm_on(jst_date(appointment.start), jst_date(now))
        if late and not (appointment.late_reason and calendar.policy.lead_time_exception):
            # R04: confirmed later than the office's lead time allows; the person is told.
            deadline = calendar.confirmation_deadline(jst_date(appointment.start))
            self.appointment = appointment
            self._move(S.REJECTED, now, f"R04: confirmation after the deadline {deadline}")
            self.rejection = {"rule": "R04", "message": f"not confirmed by {deadline}"}
            self.cancellation = Cancellation("rejected", now, recorded_by="system", note="R04")
            return [self._cancelled()]
        note = f"appointment v{appointment.version}"
        if late:  # HW 第6条(1) 原則として: staff made the exception, for the reason recorded
            note += f"; R04 exception past {calendar.confirmation_deadline(jst_date(appointment.start))}: "
            note += str(appointment.late_reason)
        previous = self.appointment if self.status is S.CONFIRMED else None  # staff moved it (R05)
        self._move(S.CONFIRMED, now, note)
        self.appointment = appointment
        self.alternatives, self.hold_expires_at = [], None
        brief = self.person.brief()
        return [
            BookingConfirmed(appointment=appointment, previous=previous, person=brief, **self._to_person())
        ]

    def propose(
        self, alternatives: list[Alternative], hold_expires_at: datetime, now: datetime
    ) -> list[Payload]:
        if self.status not in {S.REQUESTED, S.AWAITING_COORDINATION, S.RECOORDINATION_PROPOSED}:
            return []  # confirmed or closed meanwhile
        if self.status != S.RECOORDINATION_PROPOSED:
            self._move(S.RECOORDINATION_PROPOSED, now)
        self.alternatives, self.hold_expires_at = list(alternatives), hold_expires_at
        return [
            BookingRecoordinationProposed(
                alternatives=list(alternatives), hold_expires_at=hold_expires_at, **self._to_person()
            )
        ]

    def accept(self, option_id: str, now: datetime, calendar: OfficeCalendar) -> list[Payload]:
        if self.status != S.RECOORDINATION_PROPOSED:
            raise IllegalTransition(self.status, "accepted")
        option = next((a for a in self.alternatives if a.option_id == option_id), None)
        if option is None:
            raise RuleViolation("R05", f"no proposed time {option_id!r}", field="option_id")
        if self.hold_expires_at is not None and now >= self.hold_expires_at:
            raise RuleViolation("R05", "the proposed times are no longer held; the office will coordinate")
        if not calendar.can_confirm_on(jst_date(option.start), jst_date(now)):
            raise RuleViolation("R04", "that time can no longer be confirmed in time (lead time)")
        self._move(S.ALTERNATIVE_ACCEPTED, now, option_id)
        return [AlternativeAccepted(booking_id=self.booking_id, option_id=option_id)]

    def decline(self, now: datetime, policy: OfficePolicy) -> list[Payload]:
        """None of the proposed times suits the person: the office coordinates again (R05)."""
        if self.status != S.RECOORDINATION_PROPOSED:
            raise IllegalTransition(self.status, "declined")
        self._move(S.AWAITING_COORDINATION, now, "declined the proposed times")
        self.alternatives, self.hold_expires_at = [], None
        return [AlternativeDeclined(booking_id=self.booking_id), *self._waiting("declined", policy)]

    def change_windows(
        self, windows: list[Window], minutes: int, now: datetime, by: str, errors: list[FieldError]
    ) -> list[Payload]:
        """R05 (KG 第4条(2)): while the office coordinates again, the person gives new wished
        windows; the booking is requested anew with them and coordinated as a new request. Only a
        booking waiting for coordination takes them (IllegalTransition otherwise), and only windows
        that pass the intake's rules (`errors`, from rules.new_window_errors: InvalidFields). The
        same windows again right after (a retry) change nothing."""
        if self._windows_given(windows, minutes):
            return []
        if self.status != S.AWAITING_COORDINATION:
            raise IllegalTransition(self.status, "given new windows")
        if errors:
            raise InvalidFields(errors)
        shown = ", ".join(format_jst(w.start, w.end) for w in windows)
        self._move(S.REQUESTED, now, f"{WINDOWS_NOTE} from {by}: {shown} ({minutes} min)")
        self.windows, self.duration_minutes = list(windows), minutes
        return [
            BookingWindowsChanged(
                booking_id=self.booking_id,
                windows=[TimeWindow(start=w.start, end=w.end) for w in windows],
                duration_minutes=minutes,
            )
        ]

    def _windows_given(self, windows: list[Window], minutes: int) -> bool:
        """These windows are the ones the person gave last, and coordination has not moved since."""
        last = self.history[-1].note if self.history else ""
        same = self.windows == windows and self.duration_minutes == minutes
        return self.status == S.REQUESTED and same and last.startswith(WINDOWS_NOTE)

    def left_to_staff(self, reason: LeftReason, now: datetime, policy: OfficePolicy) -> list[Payload]:
        """The scheduler has nothing to offer automatically: staff coordinate (R05). The person is
        told the office will contact them (office policy), never sent a proposal without times."""
        if self.status not in {S.REQUESTED, S.RECOORDINATION_PROPOSED, S.ALTERNATIVE_ACCEPTED}:
            return []  # waiting already (a redelivery), confirmed or closed meanwhile
        self._move(S.AWAITING_COORDINATION, now, f"left to staff: {reason}")
        self.alternatives, self.hold_expires_at = [], None
        return self._waiting(reason, policy)

    def _waiting(self, reason: LeftReason | Literal["declined"], policy: OfficePolicy) -> list[Payload]:
        if not policy.coordination.tell_person_when_left_to_staff:
            return []
        return [BookingAwaitingCoordination(reason=reason, **self._to_person())]

    def hold_expired(self, now: datetime, due_at: datetime | None = None) -> list[Payload]:
        """The held alternatives lapsed: staff coordinate by hand (R05). The expiry of an earlier
        proposal (`due_at` is not this proposal's hold end: it reached us after staff proposed new
        times, its events travel through another outbox) changes nothing."""
        held_until = self.hold_expires_at
        if (
            due_at is not None
            and held_until is not None
            and abs((due_at - held_until).total_seconds()) >= 0.001
        ):
            return []
        if self.status in {S.RECOORDINATION_PROPOSED, S.ALTERNATIVE_ACCEPTED}:
            self._move(S.AWAITING_COORDINATION, now, "hold expired")
            self.alternatives, self.hold_expires_at = [], None
        return []

    # ----------------------------------------------------------------- terms (R17)

    def announce_terms(self, terms: TermsVersion) -> list[Payload]:
        """R17 (HW 第14条): tell the person of an announced change of the terms that will apply by
        the time of the consultation, once per version, while the booking is still ahead."""
        if self.status not in OPEN | {S.CONFIRMED} or terms.version in self.terms_notices:
            return []
        if terms.version == self.terms_version:
            return []  # agreed to that version already
        self.terms_notices.append(terms.version)
        return [
            BookingTermsChangeAnnounced(
                version=terms.version,
                effective_from=terms.effective_from,
                summary=terms.summary,
                url=terms.url,
                **self._to_person(),
            )
        ]

    # ----------------------------------------------------------------- notice (R06)

    def notice_due(self, appointment_version: int) -> list[Payload]:
        """The day-before notice, once per appointment version, only while confirmed with it."""
        appt = self.appointment
        if self.status != S.CONFIRMED or appt is None or appt.version != appointment_version:
            return []
        if appointment_version in self.notices_sent:
            return []
        self.notices_sent.append(appointment_version)
        return [BookingNoticeDue(appointment=appt, **self._to_person())]

    # ----------------------------------------------------------------- cancellation (R07)

    def cancel(
        self,
        *,
        channel: Channel,
        by: Literal["person", "office"],
        recorded_by: str,
        staff: bool,
        now: datetime,
        policy: OfficePolicy,
    ) -> list[Payload]:
        if self.status not in OPEN | {S.CONFIRMED, S.ATTENDED}:
            raise IllegalTransition(self.status, "cancelled")
        if by == "office":
            if not staff:
                raise RuleViolation("R07", "only office staff cancel on the office's behalf")
            reason: Literal["person", "staff"] = "staff"
        else:
            self._check_channel(channel, staff, now, policy)
            reason = "person"
        self._move(S.CANCELLED, now, f"{reason} via {channel.value}")
        self.cancellation = Cancellation(reason, now, channel.value, recorded_by)
        return [self._cancelled()]

    def _check_channel(self, channel: Channel, staff: bool, now: datetime, policy: OfficePolicy) -> None:
        # R07: the office's channels; on the consultation day itself the narrower same-day set.
        same_day = self.consultation_day == jst_date(now)
        rules = policy.cancellation
        allowed = rules.same_day_channels if same_day else rules.channels
        if channel not in allowed:
            when = "on the consultation day" if same_day else "at this office"
            names = ", ".join(c.value for c in allowed)
            raise RuleViolation(
                "R07",
                f"cancellation by {channel.value} is not accepted {when}; use: {names}",
                field="channel",
                how_to_cancel=how_to_cancel(policy, same_day),
                phone=policy.phone,
            )
        if channel in rules.staff_recorded_channels and not staff:
            raise RuleViolation(
                "R07",
                f"a cancellation by {channel.value} reaches the office and is recorded by its staff",
                field="channel",
                how_to_cancel=how_to_cancel(policy, same_day),
                phone=policy.phone,
            )

    def refuse(self, now: datetime, recorded_by: str) -> list[Payload]:
        """R13: staff stop or refuse the consultation; an open booking is cancelled with it."""
        if self.status not in OPEN | {S.CONFIRMED, S.ATTENDED}:
            return []
        self._move(S.CANCELLED, now, "R13 refused")
        self.cancellation = Cancellation("refused", now, None, recorded_by, "R13")
        return [self._cancelled()]

    # ----------------------------------------------------------------- the session (R08)

    def attend(
        self,
        how: Literal["joined", "contacted"],
        at: datetime,
        now: datetime,
        recorded_by: str,
        grace: timedelta,
    ) -> list[Payload]:
        """Joined, or contacted the office before the no-show mark: no longer a no-show (R08)."""
        if self.status == S.ATTENDED:
            return []
        if self.status != S.CONFIRMED or self.appointment is None:
            raise IllegalTransition(self.status, "attended")
        if at > now + timedelta(minutes=1) or at < self.created_at:
            raise RuleViolation("R08", "attendance is recorded between the booking and now", field="at")
        mark = self.appointment.start + grace
        if at > mark:
            raise RuleViolation("R08", f"deemed cancelled: no contact by {mark.isoformat()}", field="at")
        self._move(S.ATTENDED, now, how)
        self.attendance = Attendance(how, at, recorded_by)
        return [BookingAttended(booking_id=self.booking_id, how=how, at=at)]

    def joined_meeting(self, appointment_version: int, at: datetime, now: datetime) -> list[Payload]:
        """R08: the meeting's attendance records show the person joined in time (Teams through
        Graph): attended, recorded by the meeting. Staff's own record, if any, stands."""
        appt = self.appointment
        if self.status != S.CONFIRMED or appt is None or appt.version != appointment_version:
            return []
        self._move(S.ATTENDED, now, "joined (meeting attendance record)")
        self.attendance = Attendance("joined", at, "meeting")
        return [BookingAttended(booking_id=self.booking_id, how="joined", at=at)]

    def no_show(self, appointment_version: int, now: datetime) -> list[Payload]:
        """R08: the grace passed without contact. Booking is the authority: attendance wins."""
        appt = self.appointment
        if self.status != S.CONFIRMED or appt is None or appt.version != appointment_version:
            return []
        self._move(S.CANCELLED, now, "R08 no-show")
        self.cancellation = Cancellation("no_show", now, None, "system", "R08")
        return [self._cancelled()]

    def check_identity(
        self,
        method: Literal["name_and_contact", "photo_id", "jobseeker_card", "other"],
        confirmed: bool,
        at: datetime,
        now: datetime,
        recorded_by: str,
    ) -> list[Payload]:
        """At the start of the session staff confirm the person's identity (KG 第4条(1), R02): once
        the person has joined (attendance recorded), between the attendance and now. A later check
        replaces an earlier one (an unconfirmed identity confirmed after all)."""
        if self.status != S.ATTENDED or self.attendance is None:
            raise IllegalTransition(self.status, "identity checked")
        if at > now + timedelta(minutes=1) or at < self.attendance.at - timedelta(minutes=1):
            raise RuleViolation("R02", "the identity is checked between the attendance and now", field="at")
        self.identity_check = IdentityCheck(method, confirmed, at, recorded_by)
        self.updated_at = now
        result = "confirmed" if confirmed else "not confirmed"
        self.history.append(Change(self.status, now, f"identity {result} ({method})"))
        return []

    def complete(
        self, started_at: datetime, ended_at: datetime, now: datetime, *, identity_required: bool = False
    ) -> list[Payload]:
        """The consultation took place (R10). Where the office confirms identity at the session
        (KG 第4条(1)), only after staff recorded that they did."""
        if self.status != S.ATTENDED:
            raise IllegalTransition(self.status, "completed")
        if identity_required and not (self.identity_check and self.identity_check.confirmed):
            raise RuleViolation(
                "R02", "the person's identity was not confirmed at the session", field="identity_check"
            )
        if ended_at <= started_at or ended_at > now + timedelta(minutes=1) or started_at < self.created_at:
            raise RuleViolation("R10", "the usage window lies between the booking and now, start before end")
        came = self.attendance
        if came is not None and ended_at <= came.at:
            raise RuleViolation(
                "R10", "the session ends after the person joined or made contact", field="ended_at"
            )
        self._move(S.COMPLETED, now)
        self.completion = Window(started_at, ended_at)
        # R10: the attendance travels with the completion, so audit keeps the actual usage window
        return [
            BookingCompleted(
                booking_id=self.booking_id,
                started_at=started_at,
                ended_at=ended_at,
                attended_how=came.how if came else None,
                attended_at=came.at if came else None,
            )
        ]

    @property
    def was_no_show(self) -> bool:
        return self.cancellation is not None and self.cancellation.reason == "no_show"
