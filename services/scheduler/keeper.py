"""Keeps cells and timers in line with each request's state, and fires the timers.

Every handler first moves the request document (one conditional write carrying its events), then
calls `tidy`, which makes the reservations and timers agree with that state: a confirmed request
keeps its appointment's cells and has its notice and no-show timers; a proposal keeps its held cells
and hold timer; anything else frees its cells and disarms its timers. `tidy` is idempotent, so a
redelivered event or a crash between two writes converges on the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.scheduler.store import CounsellorStore, RequestStore, Reservations, TimerStore
from services.scheduler.timing import TimerKind, appointment_timers, hold_timer
from shared.clock import Clock
from shared.events import Envelope, HoldExpired, NoShow, NoticeDue, Payload, new_event
from shared.mongo import Doc
from shared.policy import OfficePolicy, Policies

log = logging.getLogger("consult.scheduler")

HOUSEKEEPING_EVERY = timedelta(minutes=10)
HOUSEKEEPING_FIRST = timedelta(minutes=1)  # after taking the lease
KEEP_PAST = timedelta(days=2)  # cells and finished timers stay this long after their time


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
    search_days: int = 28

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
        self._housekeeping: asyncio.Task[None] | None = None
        self.on_fired: Callable[[str, float], None] = lambda kind, lateness: None  # metrics

    async def tidy(self, doc: Doc | None) -> None:
        """Make cells and timers agree with the request's state (idempotent)."""
        if doc is None:
            return
        c, bid, status = self.ctx, doc["_id"], doc.get("status")
        now = c.clock.now()
        version = int(doc.get("version", 0))
        if status == "confirmed":
            await c.reservations.release(bid, keep=doc["appointment_cells"])
            await c.timers.cancel(bid, reason="superseded", now=now, version=version, below=version)
            await self._arm_appointment(doc)
        elif status == "proposed":
            keep = [cell for o in doc["proposal"]["options"] for cell in o["cells"]]
            await c.reservations.release(bid, keep=keep)
            await c.timers.cancel(bid, reason="superseded", now=now, version=version, below=version)
            spec = hold_timer(self._policy(doc).office_id, bid, doc["proposal"]["hold_until"], version)
            await c.timers.arm(spec, correlation_id=doc["correlation_id"], now=now)
        elif status in ("cancelled", "needs_staff", "declined", "hold_expired"):
            await c.reservations.release(bid)  # the slot is free again
            await c.timers.cancel(bid, reason=str(status), now=now, version=version)
        elif status == "completed":
            await c.timers.cancel(bid, reason="completed", now=now, version=version)

    async def disarm_no_show(self, booking_id: str, reason: str) -> int:
        """R08: attendance (or the end of the session) disarms the booking's no-show timers."""
        c = self.ctx
        doc = await c.requests.get(booking_id)
        version = int(doc.get("version", 0)) if doc else 0
        kinds = [TimerKind.NO_SHOW.value]
        return await c.timers.cancel(
            booking_id, reason=reason, now=c.clock.now(), version=version, kinds=kinds
        )

    async def _arm_appointment(self, doc: Doc) -> None:
        a, now = doc["appointment"], self.ctx.clock.now()
        for spec in appointment_timers(self._policy(doc), doc["_id"], a["start"], int(a["version"])):
            if spec.kind is TimerKind.NO_SHOW and doc.get("attended_at"):
                continue  # R08: joined or contacted already
            if spec.due_at < now - KEEP_PAST:
                continue  # long past (a very late redelivery): its outcome may be housekept already
            await self.ctx.timers.arm(spec, correlation_id=doc["correlation_id"], now=now)

    def _policy(self, doc: Doc) -> OfficePolicy:
        return self.ctx.policies[doc["office_id"]]

    # ----------------------------------------------------------------- firing

    async def fire(self, timer: Doc) -> bool:
        """The wheel's callback: emit the timer's event once, if the request still needs it."""
        c, now = self.ctx, self.ctx.clock.now()
        request = await c.requests.get(timer["booking_id"])
        if timer["office_id"] not in c.policies or not _still_needed(timer, request):
            await c.timers.cancel_one(timer["_id"], reason="stale", now=now)
            return False
        assert request is not None
        lateness = max((now - timer["due_at"]).total_seconds(), 0.0)
        event = c.event(_payload(timer, lateness), request)
        if timer["kind"] == TimerKind.HOLD:  # R05: owed until after_hold_expired has run
            await c.timers.effects_pending(timer, now)
        fired = await c.timers.fire(timer["_id"], now=now, by=c.replica_id, lateness=lateness, event=event)
        if fired:
            self.on_fired(str(timer["kind"]), lateness)
            log.info("timer %s fired (%.3fs late)", timer["_id"], lateness)
        if fired and timer["kind"] == TimerKind.HOLD:
            await self.after_hold_expired(timer)
        return fired

    async def after_hold_expired(self, timer: Doc) -> None:
        """R05: holds not taken in time are released and the request waits for staff."""
        c = self.ctx
        for _ in range(5):  # a concurrent change moves the revision: read again
            doc = await c.requests.get(timer["booking_id"])
            if not _holding(doc, timer):
                break
            assert doc is not None
            if await c.requests.update(doc, {"status": "hold_expired", "updated_at": c.clock.now()}):
                doc = await c.requests.get(timer["booking_id"])
                break
        await self.tidy(doc)
        if not _holding(doc, timer):
            await c.timers.effects_done(timer["_id"])

    async def sweep(self) -> None:
        """Finish what a crash interrupted after a hold expiry fired; now and then, housekeeping."""
        now = self.ctx.clock.now()
        for timer in await self.ctx.timers.fired_without_effects(now):
            await self.after_hold_expired(timer)
        if self._last_housekeeping is None:  # not at once: a take-over has enough to do
            self._last_housekeeping = now - HOUSEKEEPING_EVERY + HOUSEKEEPING_FIRST
        if now - self._last_housekeeping >= HOUSEKEEPING_EVERY and not self._housekeeping_running():
            self._last_housekeeping = now
            # the housekeeping queries scan (FerretDB): off the wheel's tick, which renews the lease
            self._housekeeping = asyncio.create_task(self.housekeeping(now), name="scheduler-housekeeping")

    def _housekeeping_running(self) -> bool:
        return self._housekeeping is not None and not self._housekeeping.done()

    async def housekeeping(self, now: datetime) -> None:
        try:
            cells = await self.ctx.reservations.forget_past(now - KEEP_PAST)
            timers = await self.ctx.timers.forget_finished(now - KEEP_PAST)
        except Exception as exc:  # database away: the next sweep after HOUSEKEEPING_EVERY tries again
            log.warning("housekeeping failed: %s", exc)
            return
        log.info("housekeeping: %d past cells and %d finished timers dropped", cells, timers)

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping


def _holding(doc: Doc | None, timer: Doc) -> bool:
    return doc is not None and doc.get("status") == "proposed" and doc.get("version") == timer["version"]


def _still_needed(timer: Doc, request: Doc | None) -> bool:
    if request is None or request.get("version") != timer["version"]:
        return False
    if timer["kind"] == TimerKind.HOLD:
        return bool(request.get("status") == "proposed")
    if timer["kind"] == TimerKind.NO_SHOW and request.get("attended_at"):
        return False
    start = (timer.get("data") or {}).get("start")
    if start is not None and start != (request.get("appointment") or {}).get("start"):
        return False  # armed by a write that lost a race: not the appointment on record
    return bool(request.get("status") == "confirmed")


def _payload(timer: Doc, lateness: float) -> Payload:
    bid, version, due = timer["booking_id"], int(timer["version"]), timer["due_at"]
    if timer["kind"] == TimerKind.NOTICE:  # R06
        return NoticeDue(booking_id=bid, appointment_version=version, due_at=due, lateness_seconds=lateness)
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
