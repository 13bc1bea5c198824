"""The only module of the booking service that talks to MongoDB."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared import outbox
from shared.events import Envelope
from shared.mongo import Doc


class BookingStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.bookings = db["bookings"]
        self.on_write: Callable[[], None] = lambda: None  # wakes the outbox relay

    async def ensure_indexes(self) -> None:
        await self.bookings.create_index([("office_id", 1), ("status", 1)])

    async def insert(self, doc: Doc, events: list[Envelope[Any]]) -> None:
        """The booking and its first events in one write (outbox)."""
        await self.bookings.insert_one({**doc, "version": 1, **outbox.new_document_fields(events)})
        self.on_write()

    async def get(self, booking_id: str) -> Doc | None:
        return await self.bookings.find_one({"_id": booking_id}, {"outbox": 0})
