"""Staff coordinate by hand (R05): fix a counsellor and a time, or offer other times.

Staff choices pass the same checks as automatic ones: the office's grid and hours, an open day, the
R04 deadline (unless staff make the exception the office allows, giving a reason), R01, and a
counsellor of the office serving the person's area (R20); a taken cell is a 409, never a double
booking.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from services.scheduler.coordinator import Coordinator
from services.scheduler.domain import LEFT_TO_STAFF, Conflict, Coordination, Status
from services.scheduler.slots import Slot, SlotGrid
from services.scheduler.store.reservations import HELD
from shared.mongo import Doc
from shared.policy import OfficePolicy


class StaffDesk:
    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator

    async def confirm(
        self,
        booking_id: str,
        counsellor_id: str,
        start: datetime,
        minutes: int | None,
        by: str,
        *,
        late_reason: str | None = None,
    ) -> Doc:
        """Staff fix a counsellor and a time by hand (also moving a confirmed appointment).

        R04 holds "in principle" where the office says so (HW 第6条(1) 原則として,
        `lead_time_exception`): staff may then confirm past the deadline by giving `late_reason`,
        which the appointment carries (booking records it, audit keeps the event). A reason given
        for a time within the deadline is not recorded: there is no exception to record."""
        async with self.c.ctx.locks.hold(booking_id):  # one writer of the request at a time
            doc, coordination, policy = await self._for_staff(booking_id, Status.CONFIRMED)
            if not policy.lead_time_exception:
                late_reason = None  # no exception here: a late time is refused with R04 as without a reason
            slot = await self._staff_slot(
                policy, coordination, counsellor_id, start, minutes, late=late_reason
            )
            if late_reason is not None and SlotGrid(policy).within_deadline(
                slot.start, self.c.ctx.clock.now()
            ):
                late_reason = None
            if not await self.c.reserve(slot, doc):
                raise Conflict(f"{counsellor_id} is not free at {start.isoformat()}")
            # tidy disarms an earlier hold
            return await self.c.confirm(policy, doc, coordination, slot, by=by, late_reason=late_reason)

    async def propose(
        self, booking_id: str, options: Sequence[tuple[str, datetime]], minutes: int | None, by: str
    ) -> Doc:
        """Staff offer other times (R05); they are held for the office's hold period."""
        async with self.c.ctx.locks.hold(booking_id):
            c = self.c.ctx
            doc, coordination, policy = await self._for_staff(booking_id, Status.PROPOSED)
            slots = [
                await self._staff_slot(policy, coordination, cid, start, minutes) for cid, start in options
            ]
            offered = coordination.offer(slots, policy)
            hold_until = coordination.hold_until(policy, c.clock.now())
            held: list[tuple[str, Slot]] = []
            for option_id, slot in offered:
                how: dict[str, Any] = {"kind": HELD, "option_id": option_id, "hold_until": hold_until}
                if not await self.c.reserve(slot, doc, **how):  # let go of what this attempt held
                    await c.reservations.release(booking_id, option_ids=[o for o, _ in held])
                    raise Conflict(f"{slot.counsellor_id} is not free at {slot.start.isoformat()}")
                held.append((option_id, slot))
            # record_proposal's tidy disarms the earlier hold and frees its cells
            return await self.c.record_proposal(doc, coordination, held, hold_until, by=by)

    async def _for_staff(self, booking_id: str, to: Status) -> tuple[Doc, Coordination, OfficePolicy]:
        """The request, taken up again if automatic coordination left it to staff (`reopen`: its
        fields go out with the confirm or propose that follows, which sets them anew), and allowed
        to move `to` (409 otherwise)."""
        doc = await self.c.ctx.requests.get(booking_id)
        if doc is None:
            raise LookupError(booking_id)
        coordination = Coordination.of(doc)
        if coordination.attended:  # booking would not take a new time now: refuse, never drop
            raise Conflict("the person has joined the consultation (attendance recorded): it cannot be moved")
        if coordination.status in LEFT_TO_STAFF:
            coordination.reopen(self.c.ctx.clock.now())
        coordination.check(to)
        return doc, coordination, self.c.policy(coordination.office_id)

    async def _staff_slot(
        self,
        policy: OfficePolicy,
        coordination: Coordination,
        counsellor_id: str,
        start: datetime,
        minutes: int | None,
        *,
        late: str | None = None,
    ) -> Slot:
        counsellor = await self.c.ctx.counsellors.get(counsellor_id)
        if counsellor is None or not counsellor.serves(policy, coordination.area):
            raise Conflict(f"R20: {counsellor_id} is not an active counsellor of this office for this area")
        grid = SlotGrid(policy)
        length = minutes or coordination.minutes
        problem = grid.problem(start.astimezone(UTC), length, self.c.ctx.clock.now(), lead_time=late is None)
        if problem:
            raise Conflict(problem)
        return grid.slot(counsellor_id, start, length)
