"""The booking service's use cases: load, apply the domain, store the change with its events.

HTTP routes and AMQP handlers both come here. Every change is read–act–write with the booking's
version in the write's filter; on a conflict (another handler got there first) it is read and applied
again, so concurrent deliveries and out-of-order events are safe.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta
from functools import cache, partial
from typing import Any, TypeVar

from services.booking import rules
from services.booking.domain import OPEN, Booking, IllegalTransition, RuleViolation, Status, Window
from services.booking.refusals import PersonRecord
from services.booking.store import Conflict, Stores
from shared.calendar import OfficeCalendar
from shared.clock import JST
from shared.commands import WindowsForm
from shared.events import (
    AlternativesHeld,
    Envelope,
    HoldExpired,
    LeftToStaff,
    MeetingJoined,
    NoShow,
    NoticeTimerFired,
    Payload,
    Producer,
    SlotAssigned,
)
from shared.messaging import TransientError
from shared.policy import OfficePolicy, Policies
from shared.store.locks import KeyedLocks

log = logging.getLogger(__name__)

Action = Callable[[Booking], list[Payload]]
#: (booking, now, the office's calendar) -> the events of the change
FromScheduler = Callable[[Booking, datetime, OfficeCalendar], list[Payload]]
ATTEMPTS = 8
T = TypeVar("T")


class NotFound(Exception):
    pass


class BookingService:
    def __init__(self, producer: Producer, stores: Stores, policies: Policies) -> None:
        self.producer = producer  # the clock and booking's events
        self.stores = stores
        self.policies = policies
        self.calendar = cache(lambda office_id: OfficeCalendar(self.policies[office_id]))
        self.locks = KeyedLocks()

    @property
    def now(self) -> datetime:
        return self.producer.clock.now()

    def policy(self, office_id: str) -> OfficePolicy:
        policy = self.policies.get(office_id)
        if policy is None:
            raise NotFound(f"no office {office_id!r}")
        return policy

    def envelopes(
        self, booking: Booking, payloads: list[Payload], cause: Envelope[Any] | None
    ) -> list[Envelope[Any]]:
        cid = uuid.UUID(booking.correlation_id)
        return [self.producer.event(p, booking.office_id, cause=cause, correlation_id=cid) for p in payloads]

    async def get(self, booking_id: str) -> Booking:
        booking = await self.stores.bookings.get(booking_id)
        if booking is None:
            raise NotFound(f"no booking {booking_id!r}")
        return booking

    async def _until_committed(self, key: str, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run read–act–write `attempt` under the key's lock until no other process committed first."""
        async with self.locks.hold(key):
            for n in range(ATTEMPTS):
                try:
                    return await attempt()
                except Conflict:
                    await asyncio.sleep(0.02 * (n + 1))
        raise TransientError(f"{what}: too many concurrent changes")

    async def change(self, booking_id: str, act: Action, cause: Envelope[Any] | None = None) -> Booking:
        """Read, act, commit the next version; read again if another process committed it first."""

        async def attempt() -> Booking:
            booking = await self.get(booking_id)
            await self._refresh_recipient(booking)
            steps = len(booking.history)
            payloads = act(booking)
            if not payloads and len(booking.history) == steps:
                return booking  # nothing changed (a repeat, a stale event): no write
            await self.stores.bookings.save(booking, self.envelopes(booking, payloads, cause))
            return booking

        return await self._until_committed(booking_id, f"booking {booking_id}", attempt)

    async def _refresh_recipient(self, booking: Booking) -> None:
        """R06 (HW): notices go to the address registered in My Page now, not the one at booking time."""
        policy = self.policy(booking.office_id)
        number = booking.person.jobseeker_number
        if policy.notice.to_registered_address and number:
            js = await self.stores.jobseekers.get(booking.office_id, number)
            if js is not None and js.mypage_email:
                booking.person.notice_email = js.mypage_email

    # ----------------------------------------------------------------- the person's new windows (R05)

    async def change_windows(
        self, booking_id: str, form: WindowsForm, by: str, cause: Envelope[Any] | None = None
    ) -> Booking:
        """R05 (KG 第4条(2)): the person's new wished windows for a booking the office coordinates
        again, checked as at intake at the moment they are taken (HTTP and AMQP alike)."""

        def act(b: Booking) -> list[Payload]:
            policy, now = self.policy(b.office_id), self.now
            minutes = form.duration_minutes or b.duration_minutes
            errors = rules.new_window_errors(policy, self.calendar(b.office_id), form, minutes, now)
            windows = [Window(w.start, w.end) for w in form.windows]
            return b.change_windows(windows, minutes, now, by, errors)

        return await self.change(booking_id, act, cause)

    # ----------------------------------------------------------------- events from the scheduler

    async def slot_assigned(self, event: Envelope[SlotAssigned]) -> None:
        p = event.payload
        await self._scheduler_says(event, lambda b, now, cal: b.confirm(p.appointment, now, cal))

    async def alternatives_held(self, event: Envelope[AlternativesHeld]) -> None:
        p = event.payload
        await self._scheduler_says(
            event, lambda b, now, cal: b.propose(p.alternatives, p.hold_expires_at, now)
        )

    async def left_to_staff(self, event: Envelope[LeftToStaff]) -> None:
        p = event.payload
        await self._scheduler_says(event, lambda b, now, cal: b.left_to_staff(p.reason, now, cal.policy))

    async def hold_expired(self, event: Envelope[HoldExpired]) -> None:
        due = event.payload.due_at
        await self._scheduler_says(event, lambda b, now, cal: b.hold_expired(now, due))

    async def notice_timer_fired(self, event: Envelope[NoticeTimerFired]) -> None:
        p = event.payload
        await self._scheduler_says(event, lambda b, now, cal: b.notice_due(p.appointment_version))

    async def no_show(self, event: Envelope[NoShow]) -> None:
        p = event.payload
        await self._scheduler_says(event, lambda b, now, cal: b.no_show(p.appointment_version, now))

    async def meeting_joined(self, event: Envelope[MeetingJoined]) -> None:
        p = event.payload
        await self._scheduler_says(
            event, lambda b, now, cal: b.joined_meeting(p.appointment_version, p.at, now)
        )

    async def _scheduler_says(self, event: Envelope[Any], act: FromScheduler) -> None:
        """Apply what the scheduler says to its booking, at one `now` and in the office's calendar."""
        now = self.now
        cal = self.calendar(event.office_id)
        try:
            booking = await self.change(event.payload.booking_id, lambda b: act(b, now, cal), cause=event)
        except NotFound as exc:  # our own booking ids only: it may not be visible yet
            raise TransientError(str(exc)) from exc
        if booking.was_no_show:
            await self.count_no_show(booking, event)

    # ----------------------------------------------------------------- terms (R17)

    async def announce_terms(self) -> int:
        """R17 (HW 第14条): for each office that changes its terms without consent, tell every
        person whose booking is still ahead and falls on or after an announced version's effective
        date (once per booking and version). Returns how many were told."""
        told, now = 0, self.now
        for office_id in self.policies.ids():
            policy = self.policies[office_id]
            coming = policy.terms_announced(now)
            if policy.terms_change != "general-interest-or-reasonable" or coming is None:
                continue
            since = datetime.combine(coming.effective_from, time(), JST)
            until = datetime.combine(now.astimezone(JST).date() + policy.booking_horizon, time(), JST)
            ahead = [s.value for s in OPEN | {Status.CONFIRMED}]
            skip = 0
            while page := await self.stores.bookings.find(
                office_id, after=since, before=until + timedelta(days=1), status=ahead, limit=200, skip=skip
            ):
                for b in page:
                    if coming.version not in b.terms_notices:
                        done = await self.change(b.booking_id, partial(Booking.announce_terms, terms=coming))
                        told += coming.version in done.terms_notices
                skip += len(page)
        return told

    # ----------------------------------------------------------------- people (R09, R13)

    async def _person(self, key: str, office_id: str) -> PersonRecord:
        return await self.stores.people.get(key) or PersonRecord(person_key=key, office_id=office_id)

    async def _change_person(
        self,
        key: str,
        office_id: str,
        act: Callable[[PersonRecord], list[Payload]],
        cause: Envelope[Any] | None,
    ) -> PersonRecord:

        async def attempt() -> PersonRecord:
            person = await self._person(key, office_id)
            before = repr(person)
            payloads = act(person)
            if not payloads and repr(person) == before:
                return person  # a repeat: nothing to write
            events = [self.producer.event(p, office_id, cause=cause) for p in payloads]
            await self.stores.people.save(person, events)
            return person

        return await self._until_committed(key, f"person {key}", attempt)

    async def count_no_show(self, booking: Booking, cause: Envelope[Any] | None) -> None:
        """R09: idempotent per booking, so a redelivered no-show is counted once."""
        policy = self.policy(booking.office_id)
        at = booking.cancellation.at if booking.cancellation else self.now
        recipient = booking.person.recipient()
        await self._change_person(
            booking.person_key,
            booking.office_id,
            lambda p: p.record_no_show(booking.booking_id, at, policy, recipient),
            cause,
        )

    async def refuse(
        self, booking_id: str, ground: str, detail: str | None, until: datetime | None, by: str
    ) -> Booking:
        """R13: refuse the person of this booking for one of the office's listed grounds, and cancel
        the booking if it is still ahead."""
        booking = await self.get(booking_id)
        now = self.now
        grounds = self.policy(booking.office_id).misconduct
        if ground not in grounds:
            raise RuleViolation(
                "R13", f"not a ground the office's terms list: one of {grounds}", field="ground"
            )
        if until is not None and until <= now:
            raise RuleViolation("R13", "a refusal ends in the future", field="until")
        recipient = booking.person.recipient()
        await self._change_person(
            booking.person_key,
            booking.office_id,
            lambda p: p.refuse(ground, detail, until=until, by=by, now=now, recipient=recipient),
            None,
        )
        return await self.change(booking_id, lambda b: b.refuse(now, by))

    async def decide_review(
        self, office_id: str, person_key: str, *, refuse: bool, until: datetime | None, by: str
    ) -> PersonRecord:
        """R09 with `decide: staff`: staff refuse the person under review, or dismiss the review."""
        person = await self.stores.people.get(person_key)
        if person is None or person.office_id != office_id or person.review is None:
            raise NotFound(f"no person {person_key!r} under review at {office_id}")
        now = self.now
        if refuse and until is None:
            until = now + self.policy(office_id).refusal.refuse_for
        if until is not None and until <= now:
            raise RuleViolation("R09", "a refusal ends in the future", field="until")
        last = await self.stores.bookings.get(person.review.last_booking_id)
        recipient = last.person.recipient() if last is not None else None
        return await self._change_person(
            person_key, office_id, lambda p: p.decide_review(refuse, until, by, now, recipient), None
        )

    async def lift(self, office_id: str, person_key: str, by: str) -> bool:
        person = await self.stores.people.get(person_key)
        if person is None or person.office_id != office_id:
            raise NotFound(f"no person {person_key!r} at {office_id}")
        now = self.now
        done = await self._change_person(person_key, office_id, lambda p: p.lift(by, now), None)
        return done.refusal is None


__all__ = ["BookingService", "IllegalTransition", "NotFound", "RuleViolation"]
