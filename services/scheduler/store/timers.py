"""Durable timers: the timers collection is the source of truth; APScheduler only arms what it holds.

A timer is pending until it fires or is cancelled. Firing is one conditional update pending -> fired
that also appends the event to the timer's own outbox, so however many replicas or restarts try, a
timer's event exists once. Lateness (firing time minus due time) is recorded on the timer and event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.timing import TimerSpec
from shared import outbox
from shared.events import Envelope
from shared.mongo import Doc

PENDING, FIRED, CANCELLED = "pending", "fired", "cancelled"


class TimerStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["timers"]
        self.on_write: Callable[[], None] = lambda: None  # wakes the outbox relay
        self.on_arm: Callable[[Doc], None] = lambda doc: None  # tells the wheel

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("status", 1), ("due_at", 1)])
        await self.collection.create_index("booking_id")

    async def arm(self, spec: TimerSpec, *, correlation_id: str, now: datetime) -> None:
        """Create the timer unless it exists (idempotent: the id is derived from booking, kind, version)."""
        doc = {
            "_id": spec.timer_id,
            "kind": spec.kind.value,
            "booking_id": spec.booking_id,
            "office_id": spec.office_id,
            "version": spec.version,
            "due_at": spec.due_at,
            "data": spec.data,
            "correlation_id": correlation_id,
            "status": PENDING,
            "armed_at": now,
            "effects_done": False,
            **outbox.new_document_fields([]),
        }
        result = await self.collection.update_one({"_id": spec.timer_id}, {"$setOnInsert": doc}, upsert=True)
        if result.upserted_id is not None:
            self.on_arm(doc)

    async def fire(
        self, timer_id: str, *, now: datetime, by: str, lateness: float, event: Envelope[Any]
    ) -> bool:
        """pending -> fired with the event in the same write; False if it already fired or was cancelled."""
        change = {
            "$set": {
                "status": FIRED,
                "fired_at": now,
                "fired_by": by,
                "lateness_seconds": lateness,
                "event_id": str(event.event_id),
            }
        }
        result = await self.collection.update_one(
            {"_id": timer_id, "status": PENDING}, outbox.merge(change, [event])
        )
        if result.modified_count:
            self.on_write()
        return result.modified_count == 1

    async def cancel(
        self,
        booking_id: str,
        *,
        reason: str,
        now: datetime,
        kinds: list[str] | None = None,
        below: int | None = None,
    ) -> int:
        """Disarm the booking's pending timers (of some kinds, or older than a version)."""
        query: Doc = {"booking_id": booking_id, "status": PENDING}
        if kinds:
            query["kind"] = {"$in": kinds}
        if below is not None:
            query["version"] = {"$lt": below}
        result = await self.collection.update_many(
            query, {"$set": {"status": CANCELLED, "cancelled_at": now, "cancel_reason": reason}}
        )
        return result.modified_count

    async def cancel_one(self, timer_id: str, *, reason: str, now: datetime) -> bool:
        result = await self.collection.update_one(
            {"_id": timer_id, "status": PENDING},
            {"$set": {"status": CANCELLED, "cancelled_at": now, "cancel_reason": reason}},
        )
        return result.modified_count == 1

    async def get(self, timer_id: str) -> Doc | None:
        return await self.collection.find_one({"_id": timer_id}, {"outbox": 0})

    async def due(self, now: datetime, limit: int = 500) -> list[Doc]:
        cursor = self.collection.find({"status": PENDING, "due_at": {"$lte": now}}, {"outbox": 0})
        return await cursor.sort("due_at", 1).limit(limit).to_list()

    async def upcoming(self, now: datetime, until: datetime) -> list[Doc]:
        cursor = self.collection.find(
            {"status": PENDING, "due_at": {"$gt": now, "$lte": until}}, {"outbox": 0}
        )
        return await cursor.sort("due_at", 1).to_list()

    async def fired_without_effects(self, kind: str) -> list[Doc]:
        cursor = self.collection.find({"status": FIRED, "kind": kind, "effects_done": False}, {"outbox": 0})
        return await cursor.limit(200).to_list()

    async def effects_done(self, timer_id: str) -> None:
        await self.collection.update_one({"_id": timer_id}, {"$set": {"effects_done": True}})

    async def find(
        self,
        *,
        status: str | None = None,
        booking_id: str | None = None,
        office_id: str | None = None,
        limit: int = 200,
    ) -> list[Doc]:
        query: Doc = {}
        for key, value in (("status", status), ("booking_id", booking_id), ("office_id", office_id)):
            if value:
                query[key] = value
        cursor = self.collection.find(query, {"outbox": 0})
        return await cursor.sort("due_at", 1).limit(limit).to_list()
