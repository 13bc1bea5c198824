"""One document per booking: where its coordination stands, plus the outbox of the events it caused.

The statuses and the moves between them are the domain's (services/scheduler/domain.py); this
store persists what it decided. Every change is conditional on the revision read (`rev`):
optimistic concurrency, exact on MongoDB; on FerretDB two concurrent writers of one request can both
pass (last write wins, the document stays one writer's whole state), so callers re-read after
writing and align cells and timers with what is stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.scheduler.domain import Status
from shared.events import Envelope
from shared.mongo import Doc
from shared.store import outbox
from shared.store.conditional import update_if

CANCELLED = Status.CANCELLED.value


class RequestStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["requests"]
        self.cancellations = db["cancellations"]
        self.on_write: Callable[[Any], None] = lambda doc_id: None  # wakes the outbox relay

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("office_id", 1), ("status", 1)])

    async def get(self, booking_id: str) -> Doc | None:
        """The request; a recorded cancellation always shows, even over a racing write."""
        doc = await self.collection.find_one({"_id": booking_id}, {"outbox": 0})
        if doc is not None and doc.get("status") != CANCELLED and await self._tombstone(booking_id):
            await self.collection.update_one({"_id": booking_id}, {"$set": {"status": CANCELLED}})
            doc["status"] = CANCELLED
        return doc

    async def _tombstone(self, booking_id: str) -> bool:
        return await self.cancellations.find_one({"_id": booking_id}, {"_id": 1}) is not None

    async def create(self, doc: Doc) -> bool:
        try:
            await self.collection.insert_one({**doc, "rev": 0, **outbox.new_document_fields([])})
        except DuplicateKeyError:
            return False
        return True

    async def update(
        self, doc: Doc, fields: Doc, events: Sequence[Envelope[Any]] = (), *, unset: Sequence[str] = ()
    ) -> bool:
        """Apply a change if nobody changed the request since `doc` was read; events ride along."""
        change: dict[str, Any] = {"$set": fields, "$inc": {"rev": 1}}
        if unset:
            change["$unset"] = {k: "" for k in unset}
        await outbox.announce(self.collection, doc["_id"], events)
        changed = await update_if(
            self.collection, doc["_id"], {"rev": doc["rev"]}, outbox.merge(change, list(events))
        )
        if not changed:
            await outbox.withdraw(self.collection, doc["_id"], events)
        elif events:
            self.on_write(doc["_id"])
        return changed

    async def cancel(self, booking_id: str, office_id: str, fields: Doc) -> None:
        """Cancellation wins over any state, and is remembered even before the request arrives.

        Besides the status, an insert into `cancellations` records it: FerretDB can lose an update
        to a concurrent writer (last write wins), never an inserted document."""
        with contextlib.suppress(DuplicateKeyError):
            await self.cancellations.insert_one({"_id": booking_id, **fields})
        await self.collection.update_one(
            {"_id": booking_id},
            {
                "$set": {"status": CANCELLED, **fields},
                "$inc": {"rev": 1},
                "$setOnInsert": {"office_id": office_id, "version": 0, **outbox.new_document_fields([])},
            },
            upsert=True,
        )

    async def note(self, booking_id: str, fields: Doc) -> None:
        """Facts that change no decision (attendance), recorded without a revision check."""
        await self.collection.update_one({"_id": booking_id}, {"$set": fields})

    async def of_office(self, office_id: str, statuses: Sequence[str], limit: int = 200) -> list[Doc]:
        cursor = self.collection.find(
            {"office_id": office_id, "status": {"$in": list(statuses)}}, {"outbox": 0}
        )
        return await cursor.sort("created_at", 1).limit(limit).to_list()
