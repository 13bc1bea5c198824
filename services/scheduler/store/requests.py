"""One document per booking: where its coordination stands, plus the outbox of the events it caused.

The statuses and the moves between them are the domain's (services/scheduler/domain.py); this
store persists what it decided. A move is one update, conditional on the revision read (`rev`), that
carries its events (`update`): optimistic concurrency, atomic on MongoDB, where the loser gets
Conflict and its handler retries (or staff get a 409).

Why not booking's insert-only versions (`shared/store/versioned.py`): the document's shape is read
elsewhere (the staff routes' views, `of_office`'s filter on `status`, the outbox relay of this
collection, the bench's timer seeding writes request documents) and changing it, with a migration of
stored requests, cannot be checked here without the integration suites. So on FerretDB `update` is
a read-then-write (`shared.store.conditional.update_if`): two writers that read the same `rev` can
both pass. Each of them computed the same next `version`; the later `$set` wins the state, and both
events reach the outbox (or, when FerretDB interleaves the two updates themselves, one whole update,
events included, is lost). What keeps the scheduler's writers from meeting there:

- `create`: a unique insert (`_id` is the booking id); a second `booking.requested` reads the first.
- `cancel`: wins over any state without a revision; an insert into `cancellations` records it, so a
  racing write that puts another status back is corrected by `get` (and `tidy` frees the cells).
- an acceptance and the hold's expiry: whichever resolves the hold timer first (`timer_outcomes`,
  a unique insert) is the only one that writes; a decline and the expiry both lead to states with
  the same upkeep (cells released, timers disarmed).
- the automatic moves of one booking follow its messages one at a time: each message is claimed in
  the inbox (a unique insert) and the event story is sequential (requested, then an answer or the
  expiry).
- cells are unique inserts, and after every write `Keeper.tidy` aligns cells and timers with the
  document as stored, freeing what the overwritten writer reserved; timer ids are derived from
  (booking, kind, version) and `needs_timer` drops a timer whose start is not the appointment on
  record (`VERSION_SLACK` covers the overwritten writer's version).
- `note` (attendance, completion) and `get`'s repair set fields no move reads as a decision and
  bump no revision.

Not covered on FerretDB: a staff action (`StaffDesk.confirm` / `.propose`, HTTP) at the same moment as
an automatic move of the same request (its `booking.requested`, an acceptance, the hold's expiry),
or a redelivery whose inbox lease ran out while the first handling still ran. Both writers pass;
with two `appointment.confirmed` of the same version booking keeps the first it receives (an equal
version changes nothing there) while this document keeps the last write. That is the window in which
booking's view and this one can disagree; on MongoDB one writer gets Conflict.
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
