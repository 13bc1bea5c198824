"""Durable timers: MongoDB is the source of truth; APScheduler only arms what it holds.

`timers` holds each timer (kind, due time, status as a cache for queries). A timer is *resolved* —
fired or cancelled — by inserting its outcome into `timer_outcomes` under the timer's own id. The
unique `_id` lets exactly one resolution through, however many replicas, retries or restarts try:
FerretDB applies concurrent conditional updates as read-then-write (several writers "win"), but it
never lets two inserts share an `_id`. A firing's event rides in the outcome document's outbox, so
the event exists once and is published by the relay of that collection. Lateness (firing time minus
due time) is recorded on the outcome, the timer and the event.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.scheduler.timing import TimerSpec
from shared import outbox
from shared.events import Envelope
from shared.mongo import Doc

PENDING, FIRED, CANCELLED = "pending", "fired", "cancelled"


class TimerStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["timers"]
        self.outcomes = db["timer_outcomes"]
        self.on_write: Callable[[Any], None] = lambda doc_id: None  # wakes the outcomes' outbox relay
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
        }
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            return
        self.on_arm(doc)

    async def fire(
        self, timer_id: str, *, now: datetime, by: str, lateness: float, event: Envelope[Any]
    ) -> bool:
        """Resolve as fired with its event; False if it was already fired or cancelled."""
        fields = {
            "fired_at": now,
            "fired_by": by,
            "lateness_seconds": lateness,
            "event_id": str(event.event_id),
        }
        won = await self._resolve(timer_id, FIRED, fields, [event])
        if won:
            self.on_write(timer_id)
        return won

    async def cancel_one(self, timer_id: str, *, reason: str, now: datetime) -> bool:
        """Resolve as cancelled; False if it had already fired or been cancelled."""
        return await self._resolve(timer_id, CANCELLED, {"cancelled_at": now, "cancel_reason": reason}, [])

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
        pending = await self.collection.find(query, {"_id": 1}).to_list()
        return sum([await self.cancel_one(t["_id"], reason=reason, now=now) for t in pending])

    async def _resolve(self, timer_id: str, outcome: str, fields: Doc, events: list[Envelope[Any]]) -> bool:
        try:
            await outbox.announce(self.outcomes, timer_id, events)
            await self.outcomes.insert_one(
                {"_id": timer_id, "outcome": outcome, **fields, **outbox.new_document_fields(events)}
            )
            won = True
        except DuplicateKeyError:
            won = False
        await self._sync(timer_id)
        return won

    async def _sync(self, timer_id: str) -> None:
        """Copy the outcome onto the timer (a cache: a crash before this is repaired on the next try)."""
        outcome = await self.outcomes.find_one({"_id": timer_id}, {"outbox": 0, "outbox_seq": 0})
        if outcome is None:
            return
        fields = {
            k: v for k, v in outcome.items() if k not in ("_id", "outcome", "outbox_sent", "outbox_pending")
        }
        await self.collection.update_one(
            {"_id": timer_id}, {"$set": {"status": outcome["outcome"], **fields}}
        )

    async def get(self, timer_id: str) -> Doc | None:
        return await self.collection.find_one({"_id": timer_id})

    async def due(self, now: datetime, limit: int = 500) -> list[Doc]:
        cursor = self.collection.find({"status": PENDING, "due_at": {"$lte": now}})
        return await cursor.sort("due_at", 1).limit(limit).to_list()

    async def upcoming(self, now: datetime, until: datetime) -> list[Doc]:
        cursor = self.collection.find({"status": PENDING, "due_at": {"$gt": now, "$lte": until}})
        return await cursor.sort("due_at", 1).to_list()

    async def fired_without_effects(self, kind: str) -> list[Doc]:
        cursor = self.collection.find({"status": FIRED, "kind": kind, "effects_done": False})
        return await cursor.limit(200).to_list()

    async def effects_done(self, timer_id: str) -> None:
        await self.collection.update_one({"_id": timer_id}, {"$set": {"effects_done": True}})

    async def forget_finished(self, before: datetime) -> int:
        """Housekeeping: resolved timers due before `before` whose events are out leave the hot
        collections (FerretDB scans them on every sweep; the events themselves are in the audit store)."""
        # outcomes first, then the relay's markers: an outcome is written after its marker, so one
        # listed here whose events are not out yet still has its marker in the second read
        resolved = await self.outcomes.find({}, {"_id": 1}).to_list()
        markers = await outbox.pending_markers(self.outcomes).find({}, {"doc": 1}).to_list()
        waiting = {m["doc"] for m in markers}
        ids = [d["_id"] for d in resolved if d["_id"] not in waiting]
        old = await self.collection.find(
            {"_id": {"$in": ids}, "status": {"$ne": PENDING}, "due_at": {"$lt": before}}, {"_id": 1}
        ).to_list()
        gone = [d["_id"] for d in old]
        if gone:
            await self.collection.delete_many({"_id": {"$in": gone}})
            await self.outcomes.delete_many({"_id": {"$in": gone}})
        return len(gone)

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
        return await self.collection.find(query).sort("due_at", 1).limit(limit).to_list()
