"""The person's answer to proposed times (R05): accepting one confirms it, declining releases them.

An acceptance races the hold's expiry: whichever resolves the hold timer first (a unique insert)
decides. An acceptance after the hold ended confirms nothing; the expiry is reported instead.
"""

from __future__ import annotations

import logging
from typing import Any

from services.scheduler.coordinator import Coordinator
from services.scheduler.domain import Conflict, Coordination, IllegalTransition, UnknownOption
from services.scheduler.slots import SlotGrid
from shared.events import Envelope, MessageError
from shared.mongo import Doc

log = logging.getLogger("consult.scheduler.answers")


class Answers:
    def __init__(self, coordinator: Coordinator) -> None:
        self.c = coordinator

    async def accepted(self, event: Envelope[Any], option_id: str) -> None:
        """The person chose one held alternative: it becomes the appointment (version + 1)."""
        c, bid = self.c.ctx, event.payload.booking_id
        doc = await c.requests.get(bid)
        if doc is None:
            raise Conflict(f"{bid} is not known yet")
        coordination = Coordination.of(doc)
        try:
            option = coordination.accept(option_id)
        except IllegalTransition:
            log.warning("%s: option %s accepted while %s; ignored", bid, option_id, coordination.status)
            return
        except UnknownOption as exc:
            raise MessageError("unknown-option", str(exc)) from exc
        if option is None:  # a redelivery of the acceptance that made the appointment
            await self.c.keeper.tidy(doc)
            return
        hold = await self.hold_timer(coordination)
        if not coordination.held_at(c.clock.now()) or not await self._claim_hold(hold, option_id):
            await self.c.keeper.fire(hold)  # too late: the hold expires now, if it has not already
            return
        policy = self.c.policy(coordination.office_id)
        slot = SlotGrid(policy).slot(option.counsellor_id, option.start, coordination.minutes)
        if not await self.c.reserve(slot, doc):  # the held cells become booked ones
            raise Conflict(f"{bid}: the held time {option_id} was lost")
        await self.c.confirm(policy, doc, coordination, slot, cause=event, accepted=option_id)

    async def hold_timer(self, coordination: Coordination) -> Doc:
        """The proposal's hold timer (armed if a crash kept it from being armed), as stored."""
        c, spec = self.c.ctx, coordination.hold_timer()
        await c.timers.arm(spec, correlation_id=coordination.correlation_id, now=c.clock.now())
        timer = await c.timers.get(spec.timer_id)
        assert timer is not None
        return timer

    async def _claim_hold(self, hold: Doc, option_id: str) -> bool:
        """Disarm the hold timer for this acceptance; False if it fired first (the hold expired)."""
        reason = f"accepted:{option_id}"
        if await self.c.ctx.timers.cancel_one(hold["_id"], reason=reason, now=self.c.ctx.clock.now()):
            return True
        now = await self.c.ctx.timers.get(hold["_id"])
        return now is not None and now.get("cancel_reason") == reason  # a redelivery of this acceptance

    async def declined(self, booking_id: str) -> None:
        c = self.c.ctx
        doc = await c.requests.get(booking_id)
        if doc is None:
            return
        coordination = Coordination.of(doc)
        try:
            step = coordination.decline(c.clock.now())
        except IllegalTransition:  # accepted, expired, replaced or cancelled meanwhile
            await self.c.keeper.tidy(doc)
            return
        hold = await self.hold_timer(coordination)
        await c.timers.cancel_one(hold["_id"], reason="declined", now=c.clock.now())
        if not await c.requests.update(doc, step.fields):
            raise Conflict("the request changed meanwhile")
        await self.c.keeper.tidy(await c.requests.get(booking_id))
