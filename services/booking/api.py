"""HTTP intake for portals: the same commands the AMQP intake runs."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, HTTPException, Request
from pydantic import AwareDatetime, BaseModel, Field

from services.booking.domain import Booking, Status
from services.booking.store import BookingStore
from shared.events import BookingRequested, TimeWindow
from shared.runtime import Runtime


class WindowIn(BaseModel):
    start: AwareDatetime
    end: AwareDatetime


class BookingIn(BaseModel):
    windows: list[WindowIn] = Field(min_length=1)
    duration_minutes: int = Field(30, ge=1, le=30, description="R01: at most 30 minutes")


class BookingAccepted(BaseModel):
    booking_id: str
    status: str


def router(runtime: Runtime, store: BookingStore) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["bookings"])

    @api.post("/offices/{office_id}/bookings", status_code=202, response_model=BookingAccepted)
    async def request_booking(office_id: str, body: BookingIn, request: Request) -> BookingAccepted:
        booking = Booking(
            booking_id=uuid.uuid4().hex,
            office_id=office_id,
            status=Status.REQUESTED,
            created_at=runtime.clock.now(),
            windows=[(w.start, w.end) for w in body.windows],
            duration_minutes=body.duration_minutes,
        )
        event = runtime.event(
            BookingRequested(
                booking_id=booking.booking_id,
                windows=[TimeWindow(start=s, end=e) for s, e in booking.windows],
                duration_minutes=booking.duration_minutes,
            ),
            office_id,
        )
        await store.insert(booking.to_doc(), [event])
        return BookingAccepted(booking_id=booking.booking_id, status=booking.status.value)

    @api.get("/bookings/{booking_id}")
    async def get_booking(booking_id: str) -> dict[str, object]:
        doc = await store.get(booking_id)
        if doc is None:
            raise HTTPException(404, "no such booking")
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in doc.items()}

    return api
