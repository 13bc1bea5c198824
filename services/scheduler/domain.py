"""The coordination of one booking: its states, the legal moves, and what each move wants done.

Plain Python, no I/O. A `Coordination` is read from the booking's request document (`of`). A move
checks the transition table (`IllegalTransition`, HTTP 409, otherwise), changes the coordination and
returns a `Step`: the fields of its one conditional write (by `_id` and revision, store/requests.py)
and the events that ride in that write's outbox. What a state wants of the grid and the clock — the
cells it keeps, the timers it disarms and arms — is `upkeep()`, which the keeper carries out after
every write, from the document as stored (`tidy`). The search for free slots and the claims on
grid cells (unique inserts) and on the hold timer stay with the coordinator, the answers and the
staff desk: they claim first, then the move records what was claimed.

coordinating ─┬─> confirmed ─> confirmed (staff move the appointment: version + 1)
              ├─> proposed ─┬─> confirmed (the person accepts an option, or staff confirm)
              │             ├─> proposed (staff propose other times)
              │             ├─> declined (the person declines the times)
              │             └─> hold_expired (no answer in time)
              └─> needs_staff (nothing to offer automatically, or no room for the time, R16)
needs_staff, declined, hold_expired ─> coordinating (reopen: staff take the request up; the staff's
                                       confirm or propose follows in the same write; or the
                                       person's new wished windows: placed again as a new request)
any state ─> cancelled (booking.cancelled: recorded even before the request arrives)

`completed` has been a listed status since the first version, but no move leads there (the end
of a session is a note on the request, `completed_at`); a request carrying it only has its timers
disarmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from services.scheduler.availability import Counsellor
from services.scheduler.slots import Slot, SlotGrid
from services.scheduler.timing import TimerKind, TimerSpec, appointment_timers, hold_timer
from shared.events import (
    Alternative,
    AlternativesHeld,
    Appointment,
    BookingRequested,
    BookingWindowsChanged,
    LeftReason,
    LeftToStaff,
    Payload,
    SlotAssigned,
)
from shared.policy import OfficePolicy, Policies

if TYPE_CHECKING:
    from services.scheduler.meeting import MeetingRoom


class Status(StrEnum):
    COORDINATING = "coordinating"  # being placed
    CONFIRMED = "confirmed"
    PROPOSED = "proposed"  # alternatives held (R05)
    NEEDS_STAFF = "needs_staff"  # nothing to offer automatically
    DECLINED = "declined"
    HOLD_EXPIRED = "hold_expired"
    CANCELLED = "cancelled"
    COMPLETED = "completed"  # reached by no move (see above)


S = Status
#: automatic coordination has left these to staff (R05); `reopen` takes them up again
LEFT_TO_STAFF = frozenset({S.NEEDS_STAFF, S.DECLINED, S.HOLD_EXPIRED})
#: what staff look at by default: a person waits for the office to coordinate (R05)
WAITING = (S.COORDINATING, S.PROPOSED, S.NEEDS_STAFF, S.DECLINED, S.HOLD_EXPIRED)
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.COORDINATING: frozenset({S.CONFIRMED, S.PROPOSED, S.NEEDS_STAFF, S.CANCELLED}),
    # needs_staff from proposed: an accepted time whose room could not be had (R16)
    S.PROPOSED: frozenset({S.CONFIRMED, S.PROPOSED, S.DECLINED, S.HOLD_EXPIRED, S.NEEDS_STAFF, S.CANCELLED}),
    S.NEEDS_STAFF: frozenset({S.COORDINATING, S.CANCELLED}),
    S.DECLINED: frozenset({S.COORDINATING, S.CANCELLED}),
    S.HOLD_EXPIRED: frozenset({S.COORDINATING, S.CANCELLED}),
    S.CONFIRMED: frozenset({S.CONFIRMED, S.CANCELLED}),
    S.COMPLETED: frozenset({S.CANCELLED}),
    S.CANCELLED: frozenset({S.CANCELLED}),  # a redelivered cancellation
}
Doc = dict[str, Any]  # a request document, or the fields of one write to it
#: cells and finished timers stay this long after their time; housekeeping then drops them, so an
#: appointment timer due longer ago is not armed again (its outcome may be gone already)
KEEP_PAST = timedelta(days=2)


class Conflict(Exception):
    """A staff action or a concurrent change that cannot go through as asked."""


class IllegalTransition(Conflict):
    def __init__(self, status: Status, to: Status) -> None:
        super().__init__(f"the request is {status.value}")
        self.status, self.to = status, to


class UnknownOption(Exception):
    """The person named an option the proposal does not have."""


@dataclass(frozen=True)
class Option:
    """A held alternative time (R05): its cells are reserved as `held` until the hold ends."""

    option_id: str
    counsellor_id: str
    start: datetime
    end: datetime
    cells: tuple[str, ...] = ()


@dataclass(frozen=True)
class Proposal:
    options: tuple[Option, ...]
    hold_until: datetime
    by: str | None = None


@dataclass(frozen=True)
class Booked:
    """The appointment on record, as far as cells and timers follow it (the whole one is in the
    request's `appointment` field and the confirmed event)."""

    start: datetime
    version: int
    cells: tuple[str, ...] = ()


@dataclass
class Step:
    """What a move decided: the request's changed fields (one conditional write) and its events."""

    fields: Doc = field(default_factory=dict)
    events: list[Payload] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.events)


@dataclass(frozen=True)
class Upkeep:
    """What a state wants of the grid and the clock; the keeper makes it so (idempotent)."""

    keep_cells: tuple[str, ...] | None = None  # the booking's cells to keep, the rest released; None: left
    disarm: str | None = None  # the reason to cancel the booking's pending timers with; None: none
    disarm_below: int | None = None  # only those of versions below this one (superseded)
    arm: tuple[TimerSpec, ...] = ()


def cancellation(reason: str, at: datetime, now: datetime) -> Step:
    """booking.cancelled (R07, R08): wins over any state, so it needs no read: the store records it
    unconditionally (a tombstone and an upsert), even before the request arrives."""
    return Step({"cancel_reason": reason, "cancelled_at": at, "updated_at": now})


@dataclass
class Coordination:
    booking_id: str
    office_id: str
    status: Status
    version: int = 0
    correlation_id: str = ""
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    minutes: int = 0
    area: str | None = None
    appointment: Booked | None = None
    proposal: Proposal | None = None
    confirmed_by: str | None = None
    accepted_option: str | None = None
    attended: bool = False
    updated_at: datetime | None = None

    # ----------------------------------------------------------------- the request document

    @classmethod
    def of(cls, doc: Doc) -> Coordination:
        """The coordination a request document records (documents written by any version)."""
        return cls(
            booking_id=doc["_id"],
            office_id=doc["office_id"],
            status=Status(doc["status"]),
            version=int(doc.get("version", 0)),
            correlation_id=doc.get("correlation_id", ""),
            windows=[(w["start"], w["end"]) for w in doc.get("windows", [])],
            minutes=int(doc.get("minutes", 0)),
            area=doc.get("area"),
            appointment=_booked(doc),
            proposal=_proposal(doc.get("proposal")),
            confirmed_by=doc.get("confirmed_by"),
            accepted_option=doc.get("accepted_option"),
            attended=bool(doc.get("attended_at")),
            updated_at=doc.get("updated_at"),
        )

    @staticmethod
    def open(event: BookingRequested, policy: OfficePolicy, correlation_id: str, now: datetime) -> Doc:
        """booking.requested: the document of a new coordination (R01: at most the office's length)."""
        return {
            "_id": event.booking_id,
            "office_id": policy.office_id,
            "status": S.COORDINATING.value,
            "version": 0,
            "windows": [{"start": w.start, "end": w.end} for w in event.windows],
            "minutes": SlotGrid(policy).minutes(event.duration_minutes),
            "asked_minutes": event.duration_minutes,
            "area": event.area,
            "interpreter": event.interpreter,
            "correlation_id": correlation_id,
            "created_at": now,
            "updated_at": now,
        }

    # ----------------------------------------------------------------- helpers

    def check(self, to: Status) -> None:
        """Raise IllegalTransition unless the table allows moving to `to` now."""
        if to not in TRANSITIONS[self.status]:
            raise IllegalTransition(self.status, to)

    def _move(self, to: Status, now: datetime) -> Doc:
        self.check(to)
        self.status, self.updated_at = to, now
        return {"status": to.value, "updated_at": now}

    def holds(self, version: int) -> bool:
        """The proposal of this version is still held (R05): nobody answered, nothing replaced it."""
        return self.status is S.PROPOSED and self.version == version

    def held_at(self, now: datetime) -> bool:
        """The proposal's hold still runs at `now` (an acceptance after it confirms nothing)."""
        return self.proposal is not None and now < self.proposal.hold_until

    def option_id(self, n: int) -> str:
        """The id of the n-th option (from 1) of the next proposal; the held cells carry it."""
        return f"{self.version + 1}-{n}"

    def hold_until(self, policy: OfficePolicy, now: datetime) -> datetime:
        """Until when a proposal made now is held (R05)."""
        return now + policy.hold_alternatives_for

    def hold_timer(self) -> TimerSpec:
        """The timer that ends the current proposal's hold (R05)."""
        assert self.proposal is not None
        return hold_timer(self.office_id, self.booking_id, self.proposal.hold_until, self.version)

    # ----------------------------------------------------------------- moves

    def confirm(
        self,
        slot: Slot,
        counsellor: Counsellor,
        room: MeetingRoom,
        *,
        by: str,
        now: datetime,
        accepted: str | None = None,
        late_reason: str | None = None,
    ) -> Step:
        """The slot (its cells reserved as booked) becomes the appointment, version + 1 (R05, R16).
        From coordinating, from a proposal (accepted, or staff), or moving a confirmed one (staff);
        `late_reason`: staff confirm it past the office's R04 deadline, for that reason."""
        moved = self._move(S.CONFIRMED, now)
        self.version += 1
        appointment = Appointment(
            counsellor_id=counsellor.counsellor_id,
            counsellor_name=counsellor.name,
            start=slot.start,
            end=slot.end,
            meeting_url=room.url,
            app=room.app.value,
            version=self.version,
            late_reason=late_reason,
            counsellor_email=counsellor.email,
            meeting_id=room.meeting_id,
            passcode=room.passcode,
        )
        cells = [*slot.cell_ids, *room.cells]  # the counsellor's and a pre-issued room's (R16)
        self.appointment = Booked(slot.start, self.version, tuple(cells))
        self.proposal, self.confirmed_by, self.accepted_option = None, by, accepted
        fields = {
            **moved,
            "version": self.version,
            "appointment": appointment.model_dump(),
            "appointment_cells": cells,
            "room": room.record(),
            "proposal": None,
            "confirmed_by": by,
            "accepted_option": accepted,
        }
        return Step(fields, [SlotAssigned(booking_id=self.booking_id, appointment=appointment)])

    def propose(
        self,
        held: Sequence[tuple[str, Slot]],
        hold_until: datetime,
        *,
        by: str,
        now: datetime,
        left: LeftReason = "no_free_counsellor",
    ) -> Step:
        """R05: the held slots (labelled with `option_id`) are offered until `hold_until`. With none
        to offer (`left` says why) the request waits for staff, and booking hears `LeftToStaff`:
        never a proposal without times."""
        if not held:
            return self.leave_to_staff(left, by=by, now=now)
        moved = self._move(S.PROPOSED, now)
        self.version += 1
        until = hold_until
        options = tuple(Option(o, s.counsellor_id, s.start, s.end, tuple(s.cell_ids)) for o, s in held)
        self.proposal = Proposal(options, until, by)
        alternatives = [
            Alternative(option_id=o.option_id, start=o.start, end=o.end, counsellor_id=o.counsellor_id)
            for o in options
        ]
        stored = [
            {**a.model_dump(), "cells": list(o.cells)} for a, o in zip(alternatives, options, strict=True)
        ]
        fields = {
            **moved,
            "version": self.version,
            "proposal": {"options": stored, "hold_until": until, "by": by},
        }
        event = AlternativesHeld(booking_id=self.booking_id, alternatives=alternatives, hold_expires_at=until)
        return Step(fields, [event])

    def leave_to_staff(self, reason: LeftReason, *, by: str, now: datetime) -> Step:
        """Nothing is offered automatically: staff coordinate (R05). Booking waits for them."""
        moved = self._move(S.NEEDS_STAFF, now)
        self.version += 1
        self.proposal = None
        fields = {**moved, "version": self.version, "proposal": None, "left_to_staff": reason, "left_by": by}
        return Step(fields, [LeftToStaff(booking_id=self.booking_id, reason=reason)])

    def offer(self, slots: Sequence[Slot], policy: OfficePolicy) -> list[tuple[str, Slot]]:
        """Times staff chose to propose (R05), labelled as the next proposal's options: 1 to the
        office's `max_alternatives`, no two sharing a cell."""
        if not 1 <= len(slots) <= policy.max_alternatives:
            raise Conflict(f"propose 1 to {policy.max_alternatives} times")
        if len({k for s in slots for k in s.keys}) < sum(len(s.keys) for s in slots):
            raise Conflict("the proposed times overlap")
        return [(self.option_id(k), s) for k, s in enumerate(slots, 1)]

    def accept(self, option_id: str) -> Option | None:
        """The person chose a held option (R05): the one to book, once its hold timer is disarmed and
        its cells booked; then `confirm(..., accepted=option_id)` records it. None: this acceptance
        is the appointment already (a redelivery). Whether the hold still runs is `held_at(now)`."""
        if self.status is S.CONFIRMED and self.accepted_option == option_id:
            return None
        if self.status is not S.PROPOSED:
            raise IllegalTransition(self.status, S.CONFIRMED)
        assert self.proposal is not None
        option = next((o for o in self.proposal.options if o.option_id == option_id), None)
        if option is None:
            raise UnknownOption(f"{self.booking_id} has no option {option_id!r}")
        return option

    def decline(self, now: datetime) -> Step:
        """The person declines the proposed times (R05): they are released, staff coordinate."""
        return Step(self._move(S.DECLINED, now))

    def expire_hold(self, version: int, now: datetime) -> Step:
        """The hold timer of proposal `version` fired (R05): its times are released, staff coordinate.
        An empty step if that proposal is no longer held (answered, replaced or cancelled meanwhile)."""
        if not self.holds(version):
            return Step()
        return Step(self._move(S.HOLD_EXPIRED, now))

    def cancel(self, reason: str, at: datetime, now: datetime) -> Step:
        """booking.cancelled: from any state (the handler records `cancellation` without a read)."""
        self._move(S.CANCELLED, now)
        return cancellation(reason, at, now)

    def change_windows(self, event: BookingWindowsChanged, policy: OfficePolicy, now: datetime) -> Step:
        """booking.windows_changed (R05, KG 第4条(2)): the person gave new wished windows for a
        request left to staff; it is coordinating again with them, and placed as a new request
        (`requested`'s search follows the write). An empty step: written already (a redelivery),
        the placing still to do. From any other state IllegalTransition: staff confirmed or
        proposed meanwhile, or it was cancelled, and booking hears that instead."""
        windows = [(w.start, w.end) for w in event.windows]
        minutes = SlotGrid(policy).minutes(event.duration_minutes)
        if self.status is S.COORDINATING and (self.windows, self.minutes) == (windows, minutes):
            return Step()
        if self.status not in LEFT_TO_STAFF:
            raise IllegalTransition(self.status, S.COORDINATING)
        moved = self._move(S.COORDINATING, now)
        self.windows, self.minutes = windows, minutes
        stored = [{"start": s, "end": e} for s, e in windows]
        fields = {**moved, "windows": stored, "minutes": minutes, "asked_minutes": event.duration_minutes}
        return Step({**fields, "windows_changed_at": now})

    def reopen(self, now: datetime) -> Step:
        """Staff take up a request that automatic coordination left to them (R05): it is coordinating
        again, and the staff's confirm or propose follows (written together with it)."""
        return Step(self._move(S.COORDINATING, now))

    # ----------------------------------------------------------------- what the state wants

    def upkeep(self, policies: Policies, now: datetime) -> Upkeep:
        """Cells and timers as this state wants them: a confirmed request keeps its appointment's
        cells and its notice (R06) and no-show (R08) timers (when they are due is the office's
        policy); a proposal keeps its held cells and hold timer (R05); a closed request frees its
        cells and disarms its timers."""
        if self.status is S.CONFIRMED:
            assert self.appointment is not None
            a, policy = self.appointment, policies[self.office_id]
            wanted = tuple(
                spec
                for spec in appointment_timers(policy, self.booking_id, a.start, a.version)
                if not (spec.kind is TimerKind.NO_SHOW and self.attended)  # R08: joined or contacted
                and spec.due_at >= now - KEEP_PAST
            )
            return Upkeep(a.cells, "superseded", self.version, wanted)
        if self.status is S.PROPOSED:
            assert self.proposal is not None
            keep = tuple(cell for o in self.proposal.options for cell in o.cells)
            return Upkeep(keep, "superseded", self.version, (self.hold_timer(),))
        if self.status in LEFT_TO_STAFF | {S.CANCELLED}:
            return Upkeep((), self.status.value)  # the slot is free again
        if self.status is S.COMPLETED:
            return Upkeep(None, self.status.value)
        return Upkeep()  # coordinating: being placed

    def needs_timer(self, kind: str, version: int, start: datetime | None) -> bool:
        """Whether a due timer still has something to say: same version, the hold still held, the
        appointment on record (same start), no attendance before a no-show (R08)."""
        if self.version != version:
            return False
        if kind == TimerKind.HOLD:
            return self.status is S.PROPOSED
        if kind == TimerKind.NO_SHOW and self.attended:
            return False
        if start is not None and start != (self.appointment.start if self.appointment else None):
            return False  # armed by a write that lost a race: not the appointment on record
        return self.status is S.CONFIRMED


def _booked(doc: Doc) -> Booked | None:
    a = doc.get("appointment")
    return Booked(a["start"], int(a["version"]), tuple(doc.get("appointment_cells", ()))) if a else None


def _proposal(p: Doc | None) -> Proposal | None:
    if not p:
        return None
    options = tuple(
        Option(o["option_id"], o["counsellor_id"], o["start"], o["end"], tuple(o.get("cells", ())))
        for o in p.get("options", [])
    )
    return Proposal(options, p["hold_until"], p.get("by"))
