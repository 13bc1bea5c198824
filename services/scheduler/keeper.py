"""Keeps cells and timers in line with each request's state, and fires the timers.

Every handler first moves the request document (one conditional write carrying its events), then
calls `tidy`, which makes the reservations and timers agree with that state as stored, as the
domain's `Coordination.upkeep` says: a confirmed request keeps its appointment's cells and has its
notice and no-show timers; a proposal keeps its held cells and hold timer; anything else frees its
cells and disarms its timers. `tidy` is idempotent, so a redelivered event or a crash between two
writes converges on the next run. Whether a due timer still has something to say is the domain's
`needs_timer`; a hold expiry is its `expire_hold`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.domain import KEEP_PAST, Coordination, Status
from services.scheduler.meeting import MeetingRoom, Rooms
from services.scheduler.store import CounsellorStore, RequestStore, Reservations, TimerStore
from services.scheduler.timing import TimerKind
from shared.clock import Clock
from shared.events import Envelope, HoldExpired, MeetingJoined, NoShow, NoticeTimerFired, Payload, new_event
from shared.mongo import Doc
from shared.policy import Policies
from shared.store.locks import KeyedLocks

log = logging.getLogger("consult.scheduler")

HOUSEKEEPING_EVERY = timedelta(minutes=10)
HOUSEKEEPING_FIRST = timedelta(minutes=1)  # after taking the lease
CLOSES_EVERY = timedelta(minutes=1)  # retrying deletions of meetings Graph did not confirm


@dataclass
class Context:
    """What the scheduler's use cases share: stores, policies, the clock and who we are."""

    policies: Policies
    counsellors: CounsellorStore
    reservations: Reservations
    requests: RequestStore
    timers: TimerStore
    clock: Clock
    replica_id: str
    #: R16: rooms in the offices' meeting apps (Graph meetings, pre-issued rooms)
    rooms: Rooms
    search_days: int = 28
    #: one request changed by one writer at a time in this process (shared/store/locks.py): the
    #: entry points (handlers, timers, staff routes) hold the booking's lock around read-act-write
    locks: KeyedLocks = field(default_factory=KeyedLocks)

    @classmethod
    def without_graph(
        cls, db: AsyncDatabase[Doc], policies: Policies, clock: Clock, replica_id: str
    ) -> Context:
        """The stores over `db` with no Graph client (staff record R08; pre-issued rooms only):
        for the tests and the bench, which drive the stores and the wheel without the app."""
        reservations = Reservations(db)
        return cls(
            policies=policies,
            counsellors=CounsellorStore(db),
            reservations=reservations,
            requests=RequestStore(db),
            timers=TimerStore(db),
            rooms=Rooms(db, lambda _office: None, reservations, clock),
            clock=clock,
            replica_id=replica_id,
        )

    def event(self, payload: Payload, doc: Doc, cause: Envelope[Any] | None = None) -> Envelope[Any]:
        """An event of this request's story (correlation id from the request that started it)."""
        corr = None if cause else uuid.UUID(doc["correlation_id"])
        return new_event(
            payload,
            office_id=doc["office_id"],
            producer="scheduler",
            clock=self.clock,
            cause=cause,
            correlation_id=corr,
        )


class Keeper:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._last_housekeeping: datetime | None = None
        self._last_closes: datetime | None = None
        self._closes: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self.on_fired: Callable[[str, float], None] = lambda kind, lateness: None  # metrics

    async def tidy(self, doc: Doc | None) -> None:
        """Make cells and timers agree with the request's state as stored (idempotent)."""
        if doc is None:
            return
        c, now = self.ctx, self.ctx.clock.now()
        coordination = Coordination.of(doc)
        bid, wants = coordination.booking_id, coordination.upkeep(c.policies, now)
        if wants.keep_cells is not None:
            await c.reservations.release(bid, keep=list(wants.keep_cells))
        if wants.disarm is not None:
            version, below = coordination.version, wants.disarm_below
            await c.timers.cancel(bid, reason=wants.disarm, now=now, version=version, below=below)
        for spec in wants.arm:
            await c.timers.arm(spec, correlation_id=coordination.correlation_id, now=now)
        if coordination.status is Status.CANCELLED and doc.get("room"):  # R16: its meeting goes
            await c.rooms.close(coordination.office_id, MeetingRoom.of(doc["room"]))

    async def release_attempt(self, doc: Doc) -> None:
        """Free the cells an attempt reserved but never saved (its room could not be had): only
        what the request as stored still holds (a confirmed appointment's, held options') stays."""
        c = self.ctx
        keep = Coordination.of(doc).upkeep(c.policies, c.clock.now()).keep_cells
        await c.reservations.release(doc["_id"], keep=list(keep or ()))

    async def disarm_no_show(self, booking_id: str, reason: str) -> int:
        """R08: attendance (or the end of the session) disarms the booking's no-show timers."""
        c = self.ctx
        doc = await c.requests.get(booking_id)
        version = int(doc.get("version", 0)) if doc else 0
        kinds = [TimerKind.NO_SHOW.value]
        return await c.timers.cancel(
            booking_id, reason=reason, now=c.clock.now(), version=version, kinds=kinds
        )

    # ----------------------------------------------------------------- firing

    async def fire(self, timer: Doc) -> bool:
        """The wheel's callback: emit the timer's event once, if the request still needs it."""
        async with self.ctx.locks.hold(timer["booking_id"]):
            return await self._fire(timer)

    async def _fire(self, timer: Doc) -> bool:
        c, now = self.ctx, self.ctx.clock.now()
        request = await c.requests.get(timer["booking_id"])
        if timer["office_id"] not in c.policies or not _still_needed(timer, request):
            await c.timers.cancel_one(timer["_id"], reason="stale", now=now, timer=timer)
            return False
        assert request is not None
        lateness = max((now - timer["due_at"]).total_seconds(), 0.0)
        payload = _payload(timer, lateness)
        if timer["kind"] == TimerKind.NO_SHOW and (joined := await self._joined(request, timer)):
            payload = MeetingJoined(
                booking_id=request["_id"], appointment_version=timer["version"], at=joined
            )
        event = c.event(payload, request)
        if timer["kind"] == TimerKind.HOLD:  # R05: owed until after_hold_expired has run
            await c.timers.effects_pending(timer, now)
        fired = await c.timers.fire(
            timer["_id"], now=now, by=c.replica_id, lateness=lateness, event=event, timer=timer
        )
        if fired:
            self.on_fired(str(timer["kind"]), lateness)
            log.info("timer %s fired (%.3fs late)", timer["_id"], lateness)
        if fired and timer["kind"] == TimerKind.HOLD:
            await self.after_hold_expired(timer)
        return fired

    async def _joined(self, request: Doc, timer: Doc) -> datetime | None:
        """R08: the meeting's own attendance record, where the app keeps one (Teams via Graph)."""
        room = MeetingRoom.of(request.get("room"))
        if room is None:
            return None
        return await self.ctx.rooms.joined(request["office_id"], room, by=timer["due_at"])

    async def after_hold_expired(self, timer: Doc) -> None:
        """R05: holds not taken in time are released and the request waits for staff."""
        c = self.ctx
        for _ in range(5):  # a concurrent change moves the revision: read again
            doc = await c.requests.get(timer["booking_id"])
            if not _holding(doc, timer):
                break
            assert doc is not None
            step = Coordination.of(doc).expire_hold(timer["version"], c.clock.now())
            if await c.requests.update(doc, step.fields):
                doc = await c.requests.get(timer["booking_id"])
                break
        await self.tidy(doc)
        if not _holding(doc, timer):
            await c.timers.effects_done(timer["_id"])

    async def sweep(self) -> None:
        """Finish what a crash interrupted after a hold expiry fired; now and then, housekeeping."""
        now = self.ctx.clock.now()
        if (self._last_closes is None or now - self._last_closes >= CLOSES_EVERY) and not _running(
            self._closes
        ):
            self._last_closes = now  # R16: meetings Graph has not confirmed deleted; off the tick
            self._closes = asyncio.create_task(self._retry_closes(), name="scheduler-meeting-closes")
        for timer in await self.ctx.timers.fired_without_effects(now):
            async with self.ctx.locks.hold(timer["booking_id"]):
                await self.after_hold_expired(timer)
        if self._last_housekeeping is None:  # not at once: a take-over has enough to do
            self._last_housekeeping = now - HOUSEKEEPING_EVERY + HOUSEKEEPING_FIRST
        if now - self._last_housekeeping >= HOUSEKEEPING_EVERY and not self._housekeeping_running():
            self._last_housekeeping = now
            # the housekeeping queries scan (FerretDB): off the wheel's tick, which renews the lease
            self._housekeeping = asyncio.create_task(self.housekeeping(now), name="scheduler-housekeeping")

    def _housekeeping_running(self) -> bool:
        return _running(self._housekeeping)

    async def _retry_closes(self) -> None:
        try:
            await self.ctx.rooms.retry_closes()
        except Exception as exc:  # database away: the next round tries again
            log.warning("retrying meeting deletions failed: %s", exc)

    async def housekeeping(self, now: datetime) -> None:
        try:
            cells = await self.ctx.reservations.forget_past(now - KEEP_PAST)
            timers = await self.ctx.timers.forget_finished(now - KEEP_PAST)
        except Exception as exc:  # database away: the next sweep after HOUSEKEEPING_EVERY tries again
            log.warning("housekeeping failed: %s", exc)
            return
        log.info("housekeeping: %d past cells and %d finished timers dropped", cells, timers)

    async def stop(self) -> None:
        for task in (self._housekeeping, self._closes):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _running(task: asyncio.Task[None] | None) -> bool:
    return task is not None and not task.done()


def _holding(doc: Doc | None, timer: Doc) -> bool:
    return doc is not None and Coordination.of(doc).holds(timer["version"])


def _still_needed(timer: Doc, request: Doc | None) -> bool:
    start = (timer.get("data") or {}).get("start")
    return request is not None and Coordination.of(request).needs_timer(
        timer["kind"], timer["version"], start
    )


def _payload(timer: Doc, lateness: float) -> Payload:
    bid, version, due = timer["booking_id"], int(timer["version"]), timer["due_at"]
    if timer["kind"] == TimerKind.NOTICE:  # R06
        return NoticeTimerFired(
            booking_id=bid, appointment_version=version, due_at=due, lateness_seconds=lateness
        )
    if timer["kind"] == TimerKind.NO_SHOW:  # R08
        grace = float(timer["data"]["grace_seconds"])
        return NoShow(
            booking_id=bid,
            appointment_version=version,
            start=timer["data"]["start"],
            grace_minutes=int(grace // 60),
            grace_seconds=grace,
            due_at=due,
            lateness_seconds=lateness,
        )
    return HoldExpired(booking_id=bid, due_at=due, lateness_seconds=lateness)
