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

The coordination queue (`of_office`: the requests of an office waiting for coordination) is read
from markers (shared/store/buckets.py, kind `coordination_queue`): one bucket per office and waiting
status, holding `{_id: booking id, created_at}` while the request is in that status. FerretDB would
decode every request the office ever had for a filter on `office_id` and `status`; the buckets hold
only what waits. Each write adds the marker of the status it writes before and again after the
write (a reader may have dropped it in between), and takes the old status's marker away after, then
reads the request again and puts it back if the request is in that status after all (a concurrent
writer). The reader loads each request by `_id` and drops a marker the request no longer matches
the same way. Requests stored before the markers get theirs from `backfill_queue` (start-up runs
it in the background once, recorded in `queue_state`; until then the queue is read by the query).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.scheduler.domain import WAITING, Status
from shared.events import Envelope
from shared.mongo import Doc
from shared.store import outbox
from shared.store.buckets import Buckets
from shared.store.conditional import update_if

CANCELLED = Status.CANCELLED.value
#: the statuses the coordination queue lists, each a bucket per office
QUEUED = tuple(s.value for s in WAITING)
QUEUE_MARKERS = "markers"
_EPOCH = datetime.min.replace(tzinfo=UTC)


class RequestStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["requests"]
        self.cancellations = db["cancellations"]
        self.on_write: Callable[[Any], None] = lambda doc_id: None  # wakes the outbox relay
        self.db = db
        self.queue_state = db["queue_state"]  # whether the queue's markers were backfilled
        self._queue: Buckets | None = None
        self._queue_ready = False

    async def queue(self) -> Buckets:
        """The coordination queue's markers: scope the office, bucket key the status."""
        if self._queue is None:
            self._queue = await Buckets.open(self.db, "coordination_queue", period="day")
        return self._queue

    async def get(self, booking_id: str) -> Doc | None:
        """The request; a recorded cancellation always shows, even over a racing write."""
        doc = await self.collection.find_one({"_id": booking_id}, {"outbox": 0})
        if doc is not None and doc.get("status") != CANCELLED and await self._tombstone(booking_id):
            await self.collection.update_one({"_id": booking_id}, {"$set": {"status": CANCELLED}})
            await self._left(doc, str(doc.get("status")), CANCELLED)
            doc["status"] = CANCELLED
        return doc

    # ----------------------------------------------------------------- the queue's markers

    async def _enqueue(self, doc: Doc, status: str) -> None:
        if status in QUEUED and doc.get("office_id"):
            marker = {"created_at": doc.get("created_at")}
            await (await self.queue()).add(doc["office_id"], status, doc["_id"], marker)

    async def _left(self, doc: Doc, old: str, new: str) -> None:
        """After a write from `old` to `new`: the new status's marker (again), the old one's away."""
        await self._enqueue(doc, new)
        if old != new and old in QUEUED and doc.get("office_id"):
            await self._dequeue(doc["office_id"], old, doc["_id"])

    async def _dequeue(self, office_id: str, status: str, booking_id: str) -> None:
        """Drop a marker, then put it back if the request is in that status after all (a writer
        that moved it there concurrently may have added its marker before this removal)."""
        await (await self.queue()).remove(office_id, status, booking_id)
        now = await self.collection.find_one(
            {"_id": booking_id}, {"status": 1, "office_id": 1, "created_at": 1}
        )
        if now is not None and now.get("status") == status and now.get("office_id") == office_id:
            await self._enqueue(now, status)

    async def backfill_queue(self, now: datetime) -> int:
        """Markers for the waiting requests stored before the markers existed (idempotent; one
        read of the waiting requests); then the queue is read from the markers."""
        fields = {"office_id": 1, "status": 1, "created_at": 1}
        docs = await self.collection.find({"status": {"$in": list(QUEUED)}}, fields).to_list()
        grouped: dict[tuple[str, str], list[Doc]] = {}
        for d in docs:
            if d.get("office_id"):
                marker = {"_id": d["_id"], "created_at": d.get("created_at")}
                grouped.setdefault((d["office_id"], d["status"]), []).append(marker)
        queue = await self.queue()
        for (office_id, status), markers in grouped.items():
            for k in range(0, len(markers), 1000):
                await queue.add_many(office_id, status, markers[k : k + 1000])
        with contextlib.suppress(DuplicateKeyError):
            await self.queue_state.insert_one({"_id": QUEUE_MARKERS, "at": now, "requests": len(docs)})
        self._queue_ready = True
        return len(docs)

    async def queue_ready(self) -> bool:
        if not self._queue_ready:
            self._queue_ready = await self.queue_state.find_one({"_id": QUEUE_MARKERS}) is not None
        return self._queue_ready

    async def _tombstone(self, booking_id: str) -> bool:
        return await self.cancellations.find_one({"_id": booking_id}, {"_id": 1}) is not None

    async def create(self, doc: Doc) -> bool:
        status = str(doc.get("status"))
        await self._enqueue(doc, status)
        try:
            await self.collection.insert_one({**doc, "rev": 0, **outbox.new_document_fields([])})
        except DuplicateKeyError:
            return False  # the first request's marker is the same marker
        await self._enqueue(doc, status)
        return True

    async def update(
        self, doc: Doc, fields: Doc, events: Sequence[Envelope[Any]] = (), *, unset: Sequence[str] = ()
    ) -> bool:
        """Apply a change if nobody changed the request since `doc` was read; events ride along."""
        change: dict[str, Any] = {"$set": fields, "$inc": {"rev": 1}}
        if unset:
            change["$unset"] = {k: "" for k in unset}
        old, new = str(doc.get("status")), str(fields.get("status", doc.get("status")))
        await self._enqueue(doc, new)
        await outbox.announce(self.collection, doc["_id"], events)
        changed = await update_if(
            self.collection, doc["_id"], {"rev": doc["rev"]}, outbox.merge(change, list(events))
        )
        if not changed:
            await outbox.withdraw(self.collection, doc["_id"], events)
            if new != old and new in QUEUED:  # the marker added for nothing (unless another writer's)
                await self._dequeue(doc["office_id"], new, doc["_id"])
        else:
            await self._left(doc, old, new)
            if events:
                self.on_write(doc["_id"])
        return changed

    async def cancel(self, booking_id: str, office_id: str, fields: Doc) -> None:
        """Cancellation wins over any state, and is remembered even before the request arrives.

        Besides the status, an insert into `cancellations` records it: FerretDB can lose an update
        to a concurrent writer (last write wins), never an inserted document."""
        with contextlib.suppress(DuplicateKeyError):
            await self.cancellations.insert_one({"_id": booking_id, **fields})
        before = await self.collection.find_one({"_id": booking_id}, {"status": 1, "office_id": 1})
        await self.collection.update_one(
            {"_id": booking_id},
            {
                "$set": {"status": CANCELLED, **fields},
                "$inc": {"rev": 1},
                "$setOnInsert": {"office_id": office_id, "version": 0, **outbox.new_document_fields([])},
            },
            upsert=True,
        )
        if before is not None:
            await self._left(before, str(before.get("status")), CANCELLED)

    async def note(self, booking_id: str, fields: Doc) -> None:
        """Facts that change no decision (attendance), recorded without a revision check."""
        await self.collection.update_one({"_id": booking_id}, {"$set": fields})

    async def of_office(self, office_id: str, statuses: Sequence[str], limit: int = 200) -> list[Doc]:
        """The coordination queue: the office's requests in these (waiting) statuses, oldest first.

        Reads the office's bucket of each status and each request by `_id`; a marker the request no
        longer matches is dropped. Before the backfill: the query (which scans on FerretDB)."""
        unknown = set(statuses) - set(QUEUED)
        if unknown:
            raise ValueError(f"not a status of the coordination queue: {', '.join(sorted(unknown))}")
        if not await self.queue_ready():
            cursor = self.collection.find(
                {"office_id": office_id, "status": {"$in": list(statuses)}}, {"outbox": 0}
            )
            return await cursor.sort("created_at", 1).limit(limit).to_list()
        queue = await self.queue()
        marked = [
            (m, status) for status in dict.fromkeys(statuses) for m in await queue.read(office_id, status)
        ]
        marked.sort(key=lambda ms: (ms[0].get("created_at") or _EPOCH, ms[0]["_id"]))
        found: list[Doc] = []
        for k in range(0, len(marked), limit):  # the requests by `_id`, a page at a time, concurrently
            page = marked[k : k + limit]
            docs = await asyncio.gather(*(self.get(m["_id"]) for m, _ in page))
            for (marker, status), doc in zip(page, docs, strict=True):
                if doc is None or doc.get("status") != status or doc.get("office_id") != office_id:
                    await self._dequeue(office_id, status, marker["_id"])
                elif len(found) < limit:
                    found.append(doc)
            if len(found) >= limit:
                break
        return found
