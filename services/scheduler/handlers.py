"""Thin subscribers of the scheduler service: parse, call the coordinator, done."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from services.scheduler.answers import Answers
from services.scheduler.coordinator import Coordinator
from services.scheduler.domain import Conflict, cancellation
from services.scheduler.keeper import Keeper
from shared.events import (
    AlternativeAccepted,
    AlternativeDeclined,
    BookingAttended,
    BookingCancelled,
    BookingCompleted,
    BookingRequested,
    BookingWindowsChanged,
    Envelope,
)
from shared.messaging import Consumer, TransientError


def register(consumer: Consumer, coordinator: Coordinator, answers: Answers, keeper: Keeper) -> None:
    ctx = coordinator.ctx
    on = consumer.on

    # Each handler holds the booking's lock (ctx.locks) around its read-act-write: with the timers
    # and the staff routes, one writer of a request at a time in this process.

    async def locked(booking_id: str, move: Callable[[], Awaitable[Any]]) -> None:
        """Run `move` under the booking's lock; another replica moved the request first (Conflict):
        look again shortly."""
        try:
            async with ctx.locks.hold(booking_id):
                await move()
        except Conflict as exc:
            raise TransientError(str(exc)) from exc

    @on(BookingRequested)
    async def requested(event: Envelope[BookingRequested]) -> None:
        await locked(event.payload.booking_id, lambda: coordinator.requested(event))

    @on(BookingWindowsChanged)
    async def windows_changed(event: Envelope[BookingWindowsChanged]) -> None:
        """R05: the person's new wished windows: the request is coordinated again with them."""
        await locked(event.payload.booking_id, lambda: coordinator.windows_changed(event))

    @on(AlternativeAccepted)
    async def accepted(event: Envelope[AlternativeAccepted]) -> None:
        await locked(event.payload.booking_id, lambda: answers.accepted(event, event.payload.option_id))

    @on(AlternativeDeclined)
    async def declined(event: Envelope[AlternativeDeclined]) -> None:
        await locked(event.payload.booking_id, lambda: answers.declined(event.payload.booking_id))

    @on(BookingCancelled)
    async def cancelled(event: Envelope[BookingCancelled]) -> None:
        """R07, R08: the slot is free again and every timer of the booking is disarmed."""
        p = event.payload
        step = cancellation(p.reason, event.occurred_at, ctx.clock.now())  # wins over any state: no read
        async with ctx.locks.hold(p.booking_id):
            await ctx.requests.cancel(p.booking_id, event.office_id, step.fields)
            await keeper.tidy(await ctx.requests.get(p.booking_id))

    @on(BookingAttended)
    async def attended(event: Envelope[BookingAttended]) -> None:
        """R08: joined or contacted, so the no-show timer is disarmed."""
        p = event.payload
        await ctx.requests.note(p.booking_id, {"attended_at": p.at, "attended_how": p.how})
        await keeper.disarm_no_show(p.booking_id, reason=f"attended:{p.how}")

    @on(BookingCompleted)
    async def completed(event: Envelope[BookingCompleted]) -> None:
        p = event.payload
        await ctx.requests.note(p.booking_id, {"completed_at": p.ended_at})
        await keeper.disarm_no_show(p.booking_id, reason="completed")
