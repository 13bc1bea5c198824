"""The only module of the audit service that talks to MongoDB."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.events import Envelope
from shared.mongo import Doc


class AuditStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.records = db["records"]

    async def ensure_indexes(self) -> None:
        await self.records.create_index("event_id", unique=True)
        await self.records.create_index([("booking_id", 1), ("occurred_at", 1)])

    async def record(self, event: Envelope[Any]) -> bool:
        """Store an event once; False if it was already there."""
        payload = event.payload.model_dump(mode="json")
        try:
            await self.records.insert_one(
                {
                    "event_id": str(event.event_id),
                    "type": event.type,
                    "office_id": event.office_id,
                    "producer": event.producer,
                    "occurred_at": event.occurred_at,
                    "booking_id": payload.get("booking_id"),
                    "payload": payload,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def find(self, booking_id: str) -> list[Doc]:
        cursor = self.records.find({"booking_id": booking_id}, {"_id": 0}).sort("occurred_at", 1)
        return await cursor.to_list()
