"""Turning a request into an appointment (R01, R04, R05, R16, R20), by event or by staff.

The earliest free slot inside the wished windows of a suitable counsellor is reserved (unique cells,
the loser moves on) and confirmed; when there is none, up to three alternatives on later open days
are held for the office's hold period and proposed (R05). Staff can confirm or propose by hand.
The search and the claims on the cells are here; what the request becomes is the domain's
(`Coordination.confirm`, `.propose`): the coordinator reads the request, claims, lets the domain
act, and writes its step conditionally, then the keeper aligns cells and timers with what is stored.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from services.scheduler.availability import Counsellor
from services.scheduler.domain import Conflict, Coordination, IllegalTransition, Status, Step
from services.scheduler.keeper import Context, Keeper
from services.scheduler.meeting import MeetingRoom, MeetingUnavailable, NoRoom
from services.scheduler.slots import Cell, Slot, SlotGrid, alternative_days, in_windows, on_day
from services.scheduler.store.reservations import BOOKED, HELD
from shared.clock import JST
from shared.events import BookingRequested, BookingWindowsChanged, Envelope, MessageError
from shared.mongo import Doc
from shared.policy import OfficePolicy

log = logging.getLogger("consult.scheduler.coordinator")

MAX_ROUNDS = 50  # lost races before a search gives up on a range


class Coordinator:
    def __init__(self, ctx: Context, keeper: Keeper) -> None:
        self.ctx, self.keeper = ctx, keeper
        self.stats: Counter[str] = Counter()  # confirmed, proposed, needs_staff (metrics)

    def policy(self, office_id: str) -> OfficePolicy:
        policy = self.ctx.policies.get(office_id)
        if policy is None:
            raise MessageError("unknown-office", f"no policy for office {office_id!r}")
        return policy

    # ----------------------------------------------------------------- booking.requested

    async def requested(self, event: Envelope[BookingRequested]) -> Doc:
        p, c = event.payload, self.ctx
        policy = self.policy(event.office_id)
        doc = await c.requests.get(p.booking_id) or await self._open(event, policy)
        return await self._place(policy, doc, event)

    async def windows_changed(self, event: Envelope[BookingWindowsChanged]) -> Doc:
        """R05 (KG 第4条(2)): the person's new wished windows for a request left to staff; it is
        coordinating again with them and placed exactly as a new request: the earliest free slot
        in them, else alternatives or staff as the office's policy says. A request that staff
        confirmed or proposed meanwhile, or that was cancelled, keeps what it is."""
        c = self.ctx
        policy = self.policy(event.office_id)
        doc = await c.requests.get(event.payload.booking_id)
        if doc is None:
            raise Conflict(f"{event.payload.booking_id} is not known yet")
        coordination = Coordination.of(doc)
        try:
            step = coordination.change_windows(event.payload, policy, c.clock.now())
        except IllegalTransition:
            log.warning("%s: new windows while %s; kept", doc["_id"], coordination.status.value)
            await self.keeper.tidy(doc)
            return doc
        if step:
            if not await c.requests.update(doc, step.fields):
                raise Conflict("the request changed meanwhile")
            doc = await c.requests.get(doc["_id"]) or doc
        return await self._place(policy, doc, event)

    async def _place(self, policy: OfficePolicy, doc: Doc, event: Envelope[Any]) -> Doc:
        """A request that is coordinating: confirm the earliest free slot in its windows, else hold
        alternatives (R05) or leave it to staff, as the office's policy says."""
        c = self.ctx
        coordination = Coordination.of(doc)
        if coordination.status is not Status.COORDINATING:
            await self.keeper.tidy(doc)  # a redelivery: make sure the side effects are complete
            return doc
        grid, now = SlotGrid(policy), c.clock.now()
        counsellors = await self._suitable(policy, coordination.area)
        windows, minutes = coordination.windows, coordination.minutes

        def find(taken: set[Cell]) -> list[Slot]:
            return in_windows(grid, counsellors, windows=windows, minutes=minutes, now=now, taken=taken)

        slot = await self._reserve_earliest(doc, find, *_span(windows))
        if slot is not None:
            return await self.confirm(policy, doc, coordination, slot, cause=event)
        if policy.coordination.alternatives == "staff":  # the office proposes other times by hand
            step = coordination.leave_to_staff("office_coordinates", by="scheduler", now=now)
            return await self._save(doc, step, event)
        return await self._propose_alternatives(policy, doc, coordination, counsellors, cause=event)

    async def _open(self, event: Envelope[BookingRequested], policy: OfficePolicy) -> Doc:
        p, now = event.payload, self.ctx.clock.now()
        await self.ctx.requests.create(Coordination.open(p, policy, str(event.correlation_id), now))
        doc = await self.ctx.requests.get(p.booking_id)
        assert doc is not None
        return doc

    async def _suitable(self, policy: OfficePolicy, area: str | None) -> list[Counsellor]:
        """R20: in an office with areas, only commissioners serving the person's area."""
        return [c for c in await self.ctx.counsellors.of_office(policy.office_id) if c.serves(policy, area)]

    async def _reserve_earliest(
        self,
        doc: Doc,
        find: Callable[[set[Cell]], list[Slot]],
        lo: datetime,
        hi: datetime,
        *,
        spread: bool = False,
        **how: Any,
    ) -> Slot | None:
        """Reserve the best free slot; when another request took it meanwhile (the unique index said
        no), read again what is taken in [lo, hi) and look again. With `spread`, each lost race widens
        the choice among the best few, so many contenders stop queueing for the same next cell."""
        c = self.ctx
        if not find(set()):
            return None  # nobody works then: no need to ask the database
        for lost in range(MAX_ROUNDS):
            taken = await c.reservations.taken(doc["office_id"], lo, hi, c.clock.now())
            candidates = find(taken)
            if not candidates:
                return None
            pick = (
                candidates[random.randrange(min(len(candidates), 1 + 2 * lost))] if spread else candidates[0]
            )
            if await self.reserve(pick, doc, **how):
                return pick
        return None

    async def reserve(self, slot: Slot, doc: Doc, *, kind: str = BOOKED, **hold: Any) -> bool:
        c = self.ctx
        return await c.reservations.reserve(
            slot, office_id=doc["office_id"], booking_id=doc["_id"], now=c.clock.now(), kind=kind, **hold
        )

    # ----------------------------------------------------------------- confirming

    async def confirm(
        self,
        policy: OfficePolicy,
        doc: Doc,
        coordination: Coordination,
        slot: Slot,
        *,
        cause: Envelope[Any] | None = None,
        by: str = "scheduler",
        accepted: str | None = None,
        late_reason: str | None = None,
    ) -> Doc:
        """Record the appointment and its event in one write, then align cells and timers.
        `coordination` is the request `doc` as read (staff may have reopened it)."""
        c = self.ctx
        counsellor = await c.counsellors.get(slot.counsellor_id)
        if counsellor is None:
            raise Conflict(f"counsellor {slot.counsellor_id} vanished")
        version = coordination.version + 1
        try:  # R16: a room in the counsellor's app, created or claimed for this version
            room = await c.rooms.open(policy, counsellor, slot, booking_id=doc["_id"], version=version)
        except MeetingUnavailable:
            await self.keeper.release_attempt(doc)  # the retry searches again
            raise
        except NoRoom as exc:
            if by != "scheduler":
                await self.keeper.release_attempt(doc)
                raise Conflict(f"R16 {exc.reason}: {exc.detail}") from exc
            log.warning("%s left to staff: %s", doc["_id"], exc)
            step = coordination.leave_to_staff(exc.reason, by=by, now=c.clock.now())
            return await self._save(doc, step, cause)
        before = MeetingRoom.of(doc.get("room")) if coordination.status is Status.CONFIRMED else None
        now = c.clock.now()
        step = coordination.confirm(
            slot, counsellor, room, by=by, now=now, accepted=accepted, late_reason=late_reason
        )
        fresh = await self._save(doc, step, cause)
        if before is not None and before.graph_id != room.graph_id:  # moved: the old meeting goes
            await c.rooms.close(doc["office_id"], before)
        log.info("%s confirmed with %s at %s", doc["_id"], counsellor.counsellor_id, slot.start.isoformat())
        return fresh

    async def _save(self, doc: Doc, step: Step, cause: Envelope[Any] | None) -> Doc:
        """The step in one write, conditional on the revision read, with its events; then cells and
        timers are aligned with what is stored (it frees what the loser of a concurrent change
        reserved). Conflict if another writer changed the request first."""
        c = self.ctx
        ok = await c.requests.update(doc, step.fields, [c.event(p, doc, cause) for p in step.events])
        fresh = await c.requests.get(doc["_id"])
        await self.keeper.tidy(fresh)
        if not ok or fresh is None:
            raise Conflict("the request changed meanwhile")
        self.stats[step.fields["status"]] += 1  # confirmed, proposed, needs_staff
        return fresh

    # ----------------------------------------------------------------- re-coordination (R05)

    async def _propose_alternatives(
        self,
        policy: OfficePolicy,
        doc: Doc,
        coordination: Coordination,
        counsellors: Sequence[Counsellor],
        *,
        cause: Envelope[Any],
    ) -> Doc:
        c, grid, now = self.ctx, SlotGrid(policy), self.ctx.clock.now()
        hold_until = coordination.hold_until(policy, now)
        windows = coordination.windows
        held: list[tuple[str, Slot]] = []
        for day in alternative_days(windows, now, c.search_days):
            if len(held) >= policy.max_alternatives:
                break
            if not grid.bookable_day(day, now):
                continue

            def find(taken: set[Cell], day: date = day) -> list[Slot]:
                return on_day(
                    grid,
                    counsellors,
                    day=day,
                    minutes=coordination.minutes,
                    now=now,
                    taken=taken,
                    near=windows[0][0],
                )

            lo = datetime.combine(day, datetime.min.time(), tzinfo=JST)
            option_id = coordination.option_id(len(held) + 1)
            how = {"kind": HELD, "option_id": option_id, "hold_until": hold_until}
            slot = await self._reserve_earliest(doc, find, lo, lo + timedelta(days=1), spread=True, **how)
            if slot is not None:
                held.append((option_id, slot))
        return await self.record_proposal(doc, coordination, held, hold_until, cause=cause)

    async def record_proposal(
        self,
        doc: Doc,
        coordination: Coordination,
        held: list[tuple[str, Slot]],
        hold_until: datetime,
        *,
        cause: Envelope[Any] | None = None,
        by: str = "scheduler",
    ) -> Doc:
        """Record the held alternatives and the proposal event in one write (none held: the request
        is left to staff, and booking is told so, never sent an empty proposal)."""
        step = coordination.propose(held, hold_until, by=by, now=self.ctx.clock.now())
        fresh = await self._save(doc, step, cause)
        log.info("%s: %d alternatives proposed", doc["_id"], len(held))
        return fresh


def _span(windows: Sequence[tuple[datetime, datetime]]) -> tuple[datetime, datetime]:
    return min(s for s, _ in windows), max(e for _, e in windows)
