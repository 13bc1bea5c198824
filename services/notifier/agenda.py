"""The counsellor's daily agenda (office policy `counsellor_agenda`): kept from what the notifier
already receives, sent once per counsellor and day.

What is kept (three aggregates, each a `shared.store.versioned.VersionedStore`: every change an insert
of `<id>:<version>`, so two replicas writing one document never lose an update on FerretDB, where
only a unique insert is a compare-and-set; every read is by `_id`, the one filter FerretDB answers
from an index):

- `counsellor_days`, `_id = "<counsellor_id>:<yyyy-mm-dd>"` (JST day; counsellor ids are unique
  across offices): the counsellor's name and work address and, per booking, the appointment (time,
  app, join URL, meeting id, passcode) and what the counsellor may know of the person (name, topic,
  HW's job-seeker number), or a tombstone once cancelled or moved away. R12: all of it rests sealed
  with the notifier's key (`Runtime.sealer`, bound to the document's id); only ids, the day and a
  count are in clear.
- `office_days`, `_id = "<office_id>:<yyyy-mm-dd>"`: which counsellors have a document that day, so
  the job finds them without a query on anything but `_id`.
- `agenda_bookings`, `_id = <booking_id>`: where the booking's latest appointment version sits (and
  where it sat before), so a move takes the entry off the old day even when the event names no
  `previous` appointment, and a redelivered event redoes exactly what its first delivery did.

Every booking.confirmed and booking.cancelled (with an appointment) of an office with the agenda on
updates them, after the emails of that event were tried; the rule is the appointment version: an
older one never overwrites a newer one, and at the same version a cancellation wins (events may
arrive out of order, and twice).

The job (`AgendaJob`) looks every `AGENDA_POLL_SECONDS` at the injected clock: on an open day from
the policy time `at` (JST), and until the office opens on that next day if the notifier was down at
`at`, each counsellor with consultations on the next open day is sent its agenda. Once: the email's
delivery key is `counsellor:<id>/counsellor_agenda/<day>`, claimed by a unique insert
(`store.Deliveries.claim`), which settles a race between replicas or ticks; the send, its records and
`notification.sent` are those of every other notice. Consultations fixed after the agenda went out
reach the counsellor by their own assignment email. Days that are over are deleted (R12).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from services.notifier.domain import Kind, Notice, agenda_key, counsellor_brief
from shared.calendar import OfficeCalendar, jst_date
from shared.clock import JST, WEEKDAYS_JA, Clock
from shared.events import Appointment, BookingCancelled, BookingConfirmed, Envelope, PersonBrief, Recipient
from shared.messaging import TransientError
from shared.mongo import Doc
from shared.policy import OfficePolicy, Policies
from shared.sealing import Sealer
from shared.store.locks import KeyedLocks
from shared.store.versioned import Conflict, VersionedStore, change_id

log = logging.getLogger("consult.notifier.agenda")

#: how many times a change is re-read and retried after another replica committed first
_COMMIT_TRIES = 20
#: days back from today whose documents the job deletes (a day the notifier was down for is caught up)
_FORGET_DAYS = 7


def counsellor_day_id(counsellor_id: str, day: date) -> str:
    """A counsellor's day (counsellor ids have no colon: `^[a-z0-9][a-z0-9._-]*$` at the scheduler)."""
    return f"{counsellor_id}:{day.isoformat()}"


def office_day_id(office_id: str, day: date) -> str:
    return f"{office_id}:{day.isoformat()}"


# --------------------------------------------------------------------------- when (pure)


def next_open_day(calendar: OfficeCalendar, day: date) -> date:
    """The first open day strictly after `day`."""
    d = day
    for _ in range(60):
        d += timedelta(days=1)
        if calendar.is_open(d):
            return d
    raise ValueError(f"{calendar.policy.office_id}: no open day after {day}")


def agenda_due_at(policy: OfficePolicy, day: date) -> datetime:
    """When the agenda of open day `day` is sent: at the policy time on the open day before it."""
    calendar = OfficeCalendar(policy)
    return datetime.combine(calendar.open_day_before(day), policy.counsellor_agenda.at, tzinfo=JST)


def agenda_days(policy: OfficePolicy, now: datetime) -> list[date]:
    """The open days whose agenda is due at `now`: from its time on the open day before, until the
    office opens on the day itself (so an agenda missed while the notifier was down still goes out)."""
    if not policy.counsellor_agenda.enabled:
        return []
    calendar = OfficeCalendar(policy)
    today = jst_date(now)
    candidates = [today, next_open_day(calendar, today)]
    out = []
    for day in candidates:
        if not calendar.is_open(day):
            continue
        opens = calendar.hours_on(day)[0]
        if agenda_due_at(policy, day) <= now < opens:
            out.append(day)
    return out


def agenda_subject(policy: OfficePolicy, day: date) -> str:
    return f"【{policy.service_name}】{day.month}月{day.day}日({WEEKDAYS_JA[day.weekday()]})の相談予定"


# --------------------------------------------------------------------------- what (the entries)


@dataclass(frozen=True)
class Agenda:
    """One counsellor's day, opened: who they are and their consultations in order."""

    counsellor_id: str
    office_id: str
    day: date
    name: str
    email: str | None
    entries: list[dict[str, Any]]


def _entry(booking_id: str, a: Appointment, brief: dict[str, str | None]) -> dict[str, Any]:
    return {
        "booking_id": booking_id,
        "appointment_version": a.version,
        "active": True,
        "start": a.start.isoformat(),
        "end": a.end.isoformat(),
        "app": a.app,
        "meeting_url": a.meeting_url,
        "meeting_id": a.meeting_id,
        "passcode": a.passcode,
        "person": brief,
    }


def _supersedes(version: int, active: bool, current: dict[str, Any] | None) -> bool:
    """Whether a change at (version, active) replaces what is kept: a newer version does; at the same
    version only a cancellation of what is still active does (the first delivery did the rest)."""
    if current is None:
        return True
    if version != current["appointment_version"]:
        return version > int(current["appointment_version"])
    return bool(current["active"]) and not active


class CounsellorDays:
    """The agenda's documents (see the module's doc): written on assignments, changes and
    cancellations, read by the job, every personal value sealed."""

    def __init__(self, db: AsyncDatabase[Doc], sealer: Sealer) -> None:
        self.days = VersionedStore(db["counsellor_days"], db["counsellor_days_changes"])
        self.rosters = VersionedStore(db["office_days"], db["office_days_changes"])
        self.bookings = VersionedStore(db["agenda_bookings"], db["agenda_bookings_changes"])
        self.sealer = sealer
        self.locks = KeyedLocks()  # one writer of a document at a time within this process

    # ----------------------------------------------------------------- writing

    async def record(self, event: Envelope[Any], policy: OfficePolicy) -> None:
        """Bring the agenda up to date with one booking.confirmed or booking.cancelled."""
        if not policy.counsellor_agenda.enabled:
            return
        p = event.payload
        if isinstance(p, BookingConfirmed):
            a, active, before = p.appointment, True, p.previous
            brief = counsellor_brief(p.person or PersonBrief(name=p.recipient.name), policy)
        elif isinstance(p, BookingCancelled) and p.appointment is not None:
            a, active, before, brief = p.appointment, False, None, {}
        else:
            return
        if not a.counsellor_email and not (before and before.counsellor_email):
            # Nothing to keep for a counsellor without a work address (no agenda can reach them), and
            # no database writes for the events of such offices. The one thing this leaves: an entry
            # kept for a counsellor with an address stays when the booking moves to one without and
            # the event does not name the previous appointment.
            return
        day = jst_date(a.start)
        place = counsellor_day_id(a.counsellor_id, day)  # where this version sits

        def where(state: Doc | None) -> Doc | None:
            if state is not None and not _supersedes(a.version, active, state):
                return None
            # the documents it sat in before (kept until this version's steps are done again)
            priors = [x for x in (state or {}).get("priors", []) if x != place]
            if state is not None and state["place"] != place:
                priors.append(state["place"])
            if before is not None:
                earlier = counsellor_day_id(before.counsellor_id, jst_date(before.start))
                if earlier != place and earlier not in priors:
                    priors.append(earlier)
            return {"appointment_version": a.version, "active": active, "place": place, "priors": priors}

        pointer = await self._change(self.bookings, p.booking_id, where)
        if (
            pointer is None
            or pointer["appointment_version"] != a.version
            or bool(pointer["active"]) != active
        ):
            return  # a newer version (or its cancellation) is already kept: this event changes nothing
        # What this version does, done again on a redelivery (each step is idempotent):
        for prior in pointer["priors"]:  # moved away: off the old day
            counsellor_id, _, prior_day = str(prior).rpartition(":")
            await self._put(
                policy.office_id,
                counsellor_id=counsellor_id,
                day=date.fromisoformat(prior_day),
                booking_id=p.booking_id,
                a=a,
                entry=None,
            )
        keep = active and bool(a.counsellor_email)  # no work address, no agenda: nothing to keep
        await self._put(
            policy.office_id,
            counsellor_id=a.counsellor_id,
            day=day,
            booking_id=p.booking_id,
            a=a,
            entry=_entry(p.booking_id, a, brief) if keep else None,
        )
        if keep:
            await self._enrol(policy.office_id, a.counsellor_id, day)

    async def _put(
        self,
        office_id: str,
        *,
        counsellor_id: str,
        day: date,
        booking_id: str,
        a: Appointment,
        entry: dict[str, Any] | None,
    ) -> None:
        """Keep `entry` for the booking on the counsellor's day, or a tombstone (None) at `a`'s version."""
        day_id = counsellor_day_id(counsellor_id, day)
        active = entry is not None

        def put(state: Doc | None) -> Doc | None:
            data = self._open(day_id, state) if state else {"counsellor": None, "entries": []}
            entries: list[dict[str, Any]] = data["entries"]
            current = next((e for e in entries if e["booking_id"] == booking_id), None)
            if not _supersedes(a.version, active, current):
                return None
            if not active and (state is None or (current is not None and not current["active"])):
                return None  # nothing kept for that day, or already off it: nothing to take off
            kept = entry or {"booking_id": booking_id, "appointment_version": a.version, "active": False}
            entries = [e for e in entries if e["booking_id"] != booking_id] + [kept]
            if active and a.counsellor_id == counsellor_id:
                data["counsellor"] = {"name": a.counsellor_name, "email": a.counsellor_email}
            data["entries"] = entries
            return {
                "office_id": office_id,
                "counsellor_id": counsellor_id,
                "day": day.isoformat(),
                "active": sum(1 for e in entries if e["active"]),
                "sealed": self.sealer.seal(json.dumps(data, ensure_ascii=False), _context(day_id)),
            }

        await self._change(self.days, day_id, put)

    async def _enrol(self, office_id: str, counsellor_id: str, day: date) -> None:
        def add(state: Doc | None) -> Doc | None:
            counsellors = list((state or {}).get("counsellors", []))
            if counsellor_id in counsellors:
                return None
            return {
                "office_id": office_id,
                "day": day.isoformat(),
                "counsellors": [*counsellors, counsellor_id],
            }

        await self._change(self.rosters, office_day_id(office_id, day), add)

    async def _change(
        self, store: VersionedStore, aggregate_id: str, change: Callable[[Doc | None], Doc | None]
    ) -> Doc | None:
        """Apply `change` to the latest state and commit it as the next version; re-read and retry
        if another writer committed first. Returns the state kept (new, or unchanged)."""
        async with self.locks.hold(f"{store.heads.name}:{aggregate_id}"):
            for _ in range(_COMMIT_TRIES):
                doc = await store.load(aggregate_id)
                state = _state(doc)
                new = change(state)
                if new is None:
                    return state
                version = int(doc["version"]) if doc else 0
                try:
                    await store.commit(aggregate_id, version + 1, new, [])
                except Conflict:
                    continue
                return new
        raise TransientError(
            f"{store.heads.name} {aggregate_id}: still contended after {_COMMIT_TRIES} tries"
        )

    # ----------------------------------------------------------------- reading

    async def roster(self, office_id: str, day: date) -> list[str]:
        state = _state(await self.rosters.load(office_day_id(office_id, day)))
        return list(state["counsellors"]) if state else []

    async def agenda(self, counsellor_id: str, day: date) -> Agenda | None:
        day_id = counsellor_day_id(counsellor_id, day)
        state = _state(await self.days.load(day_id))
        if state is None:
            return None
        data = self._open(day_id, state)
        who = data.get("counsellor") or {}
        entries = sorted((e for e in data["entries"] if e["active"]), key=lambda e: e["start"])
        return Agenda(
            counsellor_id=counsellor_id,
            office_id=str(state["office_id"]),
            day=day,
            name=str(who.get("name") or ""),
            email=who.get("email"),
            entries=[
                {**e, "start": datetime.fromisoformat(e["start"]), "end": datetime.fromisoformat(e["end"])}
                for e in entries
            ],
        )

    def _open(self, day_id: str, state: Doc) -> dict[str, Any]:
        opened: dict[str, Any] = json.loads(self.sealer.open(str(state["sealed"]), _context(day_id)))
        return opened

    # ----------------------------------------------------------------- forgetting (R12)

    async def forget(self, office_id: str, day: date) -> None:
        """Delete an office's day that is over: each counsellor's document, its pointers, the roster."""
        roster_id = office_day_id(office_id, day)
        for counsellor_id in await self.roster(office_id, day):
            day_id = counsellor_day_id(counsellor_id, day)
            state = _state(await self.days.load(day_id))
            if state is not None:
                for e in self._open(day_id, state)["entries"]:
                    pointer = _state(await self.bookings.load(e["booking_id"]))
                    if pointer and pointer["place"] == day_id:  # the booking's latest place is over
                        await _delete(self.bookings, e["booking_id"])
            await _delete(self.days, day_id)
        await _delete(self.rosters, roster_id)


def _state(doc: Doc | None) -> Doc | None:
    return {k: v for k, v in doc.items() if k not in ("_id", "version")} if doc else None


def _context(day_id: str) -> str:
    return f"notifier:counsellor-day:{day_id}"


async def _delete(store: VersionedStore, aggregate_id: str) -> None:
    """Every version of an aggregate, then its head (all by `_id`)."""
    doc = await store.load(aggregate_id)
    if doc is None:
        return
    for v in range(1, int(doc["version"]) + 1):
        await store.changes.delete_one({"_id": change_id(aggregate_id, v)})
    await store.heads.delete_one({"_id": aggregate_id})


# --------------------------------------------------------------------------- the job


def agenda_notice(policy: OfficePolicy, agenda: Agenda) -> Notice:
    assert agenda.email is not None
    return Notice(
        kind=Kind.COUNSELLOR_AGENDA,
        key=agenda_key(agenda.counsellor_id, agenda.day),
        office_id=policy.office_id,
        booking_id="",
        recipient=Recipient(name=agenda.name, email=agenda.email),
        subject=agenda_subject(policy, agenda.day),
        facts={"day": agenda.day, "entries": agenda.entries},
    )


class AgendaJob:
    """Sends the agendas that are due, every `poll_seconds`, by the injected clock."""

    def __init__(
        self,
        send: Callable[[Notice], Awaitable[None]],
        days: CounsellorDays,
        policies: Policies,
        clock: Clock,
        poll_seconds: float,
    ) -> None:
        self.send = send  # DeliveryService.send_standalone: claim, send, mark, like every notice
        self.days = days
        self.policies = policies
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._stop = asyncio.Event()
        self._forgotten: dict[str, date] = {}  # office -> the day up to which past days are deleted
        self.ticks = 0

    def offices(self) -> list[OfficePolicy]:
        return [self.policies[o] for o in self.policies.ids() if self.policies[o].counsellor_agenda.enabled]

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except PyMongoError as exc:  # the database away: the next tick tries again
                log.warning("agenda: the database did not answer (%s); again in %ss", exc, self.poll_seconds)
            except Exception:
                log.exception("agenda tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_seconds)

    def stop(self) -> None:
        self._stop.set()

    async def tick(self) -> None:
        now = self.clock.now()
        for policy in self.offices():
            for day in agenda_days(policy, now):
                await self.send_day(policy, day)
            await self._forget_past(policy, jst_date(now))
        self.ticks += 1

    async def send_day(self, policy: OfficePolicy, day: date) -> None:
        for counsellor_id in await self.days.roster(policy.office_id, day):
            agenda = await self.days.agenda(counsellor_id, day)
            if agenda is None or not agenda.entries or not agenda.email:
                continue  # nothing left that day (cancelled, moved), or nowhere to write
            await self.send(agenda_notice(policy, agenda))

    async def _forget_past(self, policy: OfficePolicy, today: date) -> None:
        if self._forgotten.get(policy.office_id) == today:
            return
        for back in range(_FORGET_DAYS, 0, -1):
            await self.days.forget(policy.office_id, today - timedelta(days=back))
        self._forgotten[policy.office_id] = today
