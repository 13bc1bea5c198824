"""Staff coordinate by hand (R05): fix a counsellor and a time, or offer other times.

Staff choices pass the same checks as automatic ones: the office's grid and hours, an open day, the
R04 deadline, R01, and a counsellor of the office serving the person's area (R20); a taken cell is
a 409, never a double booking.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from services.scheduler.coordinator import Coordinator
from services.scheduler.domain import Conflict
from services.scheduler.slots import Slot, SlotGrid
from services.scheduler.store.requests import PENDING
from services.scheduler.store.reservations import HELD
from shared.mongo import Doc
from shared.policy import OfficePolicy


class StaffDesk:
    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator

    async def confirm(
        self, booking_id: str, counsellor_id: str, start: datetime, minutes: int | None, by: str
    ) -> Doc:
        """Staff fix a counsellor and a time by hand (also moving a confirmed appointment)."""
        doc, policy = await self._for_staff(booking_id, ("confirmed", *PENDING))
        slot = await self._staff_slot(policy, doc, counsellor_id, start, minutes)
        if not await self.c.reserve(slot, doc):
            raise Conflict(f"{counsellor_id} is not free at {start.isoformat()}")
        return await self.c.confirm(policy, doc, slot, by=by)  # tidy disarms an earlier hold

    async def propose(
        self, booking_id: str, options: Sequence[tuple[str, datetime]], minutes: int | None, by: str
    ) -> Doc:
        """Staff offer other times (R05); they are held for the office's hold period."""
        c = self.c.ctx
        doc, policy = await self._for_staff(booking_id, PENDING)
        if not 1 <= len(options) <= policy.max_alternatives:
            raise Conflict(f"propose 1 to {policy.max_alternatives} times")
        slots = [await self._staff_slot(policy, doc, cid, start, minutes) for cid, start in options]
        if len({k for s in slots for k in s.keys}) < sum(len(s.keys) for s in slots):
            raise Conflict("the proposed times overlap")
        version, now = int(doc["version"]) + 1, c.clock.now()
        hold_until = now + policy.hold_alternatives_for
        held: list[tuple[str, Slot]] = []
        for k, slot in enumerate(slots, 1):
            option_id = f"{version}-{k}"
            how: dict[str, Any] = {"kind": HELD, "option_id": option_id, "hold_until": hold_until}
            if not await self.c.reserve(slot, doc, **how):  # let go of what this attempt held
                await c.reservations.release(booking_id, option_ids=[o for o, _ in held])
                raise Conflict(f"{slot.counsellor_id} is not free at {slot.start.isoformat()}")
            held.append((option_id, slot))
        # record_proposal's tidy disarms the earlier hold and frees its cells
        return await self.c.record_proposal(doc, held, hold_until, by=by)

    async def _for_staff(self, booking_id: str, statuses: Sequence[str]) -> tuple[Doc, OfficePolicy]:
        doc = await self.c.ctx.requests.get(booking_id)
        if doc is None:
            raise LookupError(booking_id)
        if doc["status"] not in statuses:
            raise Conflict(f"the request is {doc['status']}")
        return doc, self.c.policy(doc["office_id"])

    async def _staff_slot(
        self, policy: OfficePolicy, doc: Doc, counsellor_id: str, start: datetime, minutes: int | None
    ) -> Slot:
        counsellor = await self.c.ctx.counsellors.get(counsellor_id)
        if counsellor is None or not counsellor.serves(policy, doc.get("area")):
            raise Conflict(f"R20: {counsellor_id} is not an active counsellor of this office for this area")
        grid = SlotGrid(policy)
        length = minutes or doc["minutes"]
        problem = grid.problem(start.astimezone(UTC), length, self.c.ctx.clock.now())
        if problem:
            raise Conflict(problem)
        return grid.slot(counsellor_id, start, length)
