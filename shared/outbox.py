"""Transactional outbox without transactions: events ride inside the aggregate's own document.

A state change and the events it causes are one `update_one` on one document (atomic in MongoDB and
FerretDB alike). The relay publishes each document's unsent events in order, with confirms, then moves
the document's `outbox_sent` mark. A crash between publish and mark republishes; consumers dedupe by
event id. Fields: `outbox` (list of event dicts), `outbox_sent` (how many were published),
`outbox_pending` (indexed flag the relay looks for), `outbox_seq` (bumped by every append, so the
relay never clears the flag over events appended while it was publishing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.events import Envelope, parse_event
from shared.messaging import EventPublisher
from shared.mongo import Doc

log = logging.getLogger(__name__)


def append(events: Sequence[Envelope[Any]]) -> dict[str, Any]:
    """Update operators that add events to a document's outbox; merge them into the state change."""
    return {
        "$push": {"outbox": {"$each": [e.model_dump(mode="json") for e in events]}},
        "$set": {"outbox_pending": True},
        "$inc": {"outbox_seq": 1},
    }


def merge(update: dict[str, Any], events: Sequence[Envelope[Any]]) -> dict[str, Any]:
    """One update document holding both the state change and the outbox append."""
    if not events:
        return update
    out = {k: dict(v) for k, v in update.items()}
    for op, fields in append(events).items():
        out.setdefault(op, {}).update(fields)
    return out


def new_document_fields(events: Sequence[Envelope[Any]]) -> Doc:
    """Outbox fields for a document inserted together with its first events."""
    return {
        "outbox": [e.model_dump(mode="json") for e in events],
        "outbox_sent": 0,
        "outbox_pending": bool(events),
        "outbox_seq": 0,
    }


class OutboxRelay:
    """Publishes pending events of one collection; woken on writes, polls as a safety net."""

    def __init__(
        self,
        collection: AsyncCollection[Doc],
        publisher: EventPublisher,
        poll_seconds: float = 1.0,
        *,
        delete_sent: bool = False,
        concurrency: int = 16,
    ) -> None:
        self.collection = collection
        self.publisher = publisher
        self.poll_seconds = poll_seconds
        self.delete_sent = delete_sent  # carrier documents (access logs) go once their events are out
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._ids: set[Any] = set()
        self._scan = True
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.published = 0
        self.failures = 0
        self.last_backlog = 0

    async def ensure_indexes(self) -> None:
        await self.collection.create_index("outbox_pending")

    def poke(self, doc_id: Any = None) -> None:
        """Something was written: publish now rather than at the next poll.

        With the document's id the relay reads just that document (an `_id` lookup, the one query
        FerretDB answers from an index); without it, it scans for every pending document.
        """
        if doc_id is None:
            self._scan = True
        else:
            self._ids.add(doc_id)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox:{self.collection.name}")

    async def stop(self) -> None:
        # Python 3.11's wait_for can swallow a cancel that lands as the wake event fires (a poke at
        # shutdown): the flag ends the loop even then, so stop() cannot hang.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.drain_once()  # what was written before stopping still goes out if it can

    async def backlog(self) -> int:
        return await self.collection.count_documents({"outbox_pending": True})

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_scan = loop.time()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
            self._wake.clear()
            ids, self._ids = self._ids, set()
            scan = self._scan or loop.time() - last_scan >= self.poll_seconds
            try:
                if ids:
                    await self.drain_ids(ids)
                if scan:
                    self._scan = False
                    last_scan = loop.time()
                    while await self.drain_once():
                        pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database down: keep the events, try again
                self.failures += 1
                self._scan = True  # the poked ids are still flagged: the next scan finds them
                log.warning("outbox %s: relay paused: %s", self.collection.name, exc)
                await asyncio.sleep(min(self.poll_seconds, 1.0))

    async def drain_ids(self, ids: set[Any]) -> None:
        docs = [await self.collection.find_one({"_id": i}, _PROJECTION) for i in ids]
        await self._relay_all([d for d in docs if d is not None and d.get("outbox_pending")])

    async def drain_once(self, batch: int = 200) -> int:
        """Publish one batch of pending documents; returns how many documents were handled."""
        docs = await self.collection.find({"outbox_pending": True}, _PROJECTION).limit(batch).to_list()
        self.last_backlog = len(docs)
        await self._relay_all(docs)
        return len(docs)

    async def _relay_all(self, docs: list[Doc]) -> None:
        """Documents in parallel (bounded); each document's events strictly in order."""

        async def one(doc: Doc) -> None:
            async with self._slots:
                await self._relay(doc)

        results = await asyncio.gather(*(one(d) for d in docs), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _relay(self, doc: Doc) -> None:
        outbox: list[Doc] = doc.get("outbox", [])
        sent = int(doc.get("outbox_sent", 0))
        for raw in outbox[sent:]:
            await self.publisher.publish(parse_event(raw))
            self.published += 1
        if self.delete_sent:
            await self.collection.delete_one({"_id": doc["_id"]})
            return
        # Mark by _id alone (an index lookup on FerretDB); $max keeps the mark monotonic. An append
        # that raced this relay moved outbox_seq: the re-read sees it and raises the flag again.
        seq = doc.get("outbox_seq", 0)
        await self.collection.update_one(
            {"_id": doc["_id"]}, {"$max": {"outbox_sent": len(outbox)}, "$set": {"outbox_pending": False}}
        )
        now = await self.collection.find_one({"_id": doc["_id"]}, {"outbox_seq": 1})
        if now is not None and now.get("outbox_seq", 0) != seq:
            await self.collection.update_one({"_id": doc["_id"]}, {"$set": {"outbox_pending": True}})
            self.poke(doc["_id"])


_PROJECTION = {"outbox": 1, "outbox_sent": 1, "outbox_seq": 1}


def pending_markers(collection: AsyncCollection[Doc]) -> AsyncCollection[Doc]:
    """Where a `MarkedRelay` of `collection` finds its work."""
    return collection.database[f"{collection.name}_pending"]


async def mark_pending(markers: AsyncCollection[Doc], doc_id: Any) -> None:
    """Record that document `doc_id` will carry events; the writer calls it before inserting it."""
    with contextlib.suppress(DuplicateKeyError):  # two writers raced for the same version
        await markers.insert_one({"_id": doc_id, "at": time.time()})


class MarkedRelay(OutboxRelay):
    """The relay for insert-only documents (one document per change, its events fixed at insert).

    Pending work is a small side collection of markers (`_id` = the document's id) instead of a flag
    on the document: the writer inserts the marker before the document, the relay publishes the
    document's events and deletes the marker. The documents themselves are never updated. On
    FerretDB 1.x an update scans the whole collection under the database's write lock, so marking
    every change as sent made each commit slower as history grew and stalled every other writer of
    the service; marker inserts and deletes touch a collection only as large as the backlog.

    A marker whose document does not exist is a writer that lost the race for that version (the
    document is the winner's and is published anyway) or crashed before inserting: it is dropped
    after `grace_seconds`. Markers are taken in `_id` order and the changes of one aggregate
    (`<id>:<version>`) are published one after another, so their events keep their order.
    """

    def __init__(
        self,
        collection: AsyncCollection[Doc],
        markers: AsyncCollection[Doc],
        publisher: EventPublisher,
        poll_seconds: float = 1.0,
        *,
        grace_seconds: float = 300.0,
        concurrency: int = 16,
    ) -> None:
        super().__init__(collection, publisher, poll_seconds, concurrency=concurrency)
        self.markers = markers
        self.grace_seconds = grace_seconds
        self._in_flight: set[Any] = set()

    async def mark(self, doc_id: Any) -> None:
        await mark_pending(self.markers, doc_id)

    async def ensure_indexes(self) -> None:
        """Adopt documents a flag-based relay left unsent (data written before markers existed)."""
        async for doc in self.collection.find({"outbox_pending": True}, _PROJECTION):
            if int(doc.get("outbox_sent", 0)) < len(doc.get("outbox", [])):
                await self.mark(doc["_id"])
            await self.collection.update_one({"_id": doc["_id"]}, {"$set": {"outbox_pending": False}})

    async def backlog(self) -> int:
        return await self.markers.count_documents({})

    async def drain_ids(self, ids: set[Any]) -> None:
        markers = [await self.markers.find_one({"_id": i}) for i in ids]
        await self._relay_markers([m for m in markers if m is not None])

    async def drain_once(self, batch: int = 200) -> int:
        """One batch of markers; returns how many were settled (young orphans stay and don't count)."""
        markers = await self.markers.find({}).sort("_id", 1).limit(batch).to_list()
        self.last_backlog = len(markers)
        return await self._relay_markers(markers)

    async def _relay_markers(self, markers: list[Doc]) -> int:
        chains: dict[str, list[Doc]] = {}
        for m in sorted(markers, key=lambda m: str(m["_id"])):
            if m["_id"] not in self._in_flight:
                chains.setdefault(str(m["_id"]).rsplit(":", 1)[0], []).append(m)

        async def chain(ms: list[Doc]) -> int:
            async with self._slots:
                settled = 0
                for m in ms:
                    if not await self._settle(m):
                        break  # keep the aggregate's order: later versions wait for this one
                    settled += 1
                return settled

        results = await asyncio.gather(*(chain(ms) for ms in chains.values()), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return sum(r for r in results if isinstance(r, int))

    async def _settle(self, marker: Doc) -> bool:
        doc_id = marker["_id"]
        self._in_flight.add(doc_id)
        try:
            doc = await self.collection.find_one({"_id": doc_id}, {"outbox": 1})
            if doc is None:
                if time.time() - float(marker.get("at", 0)) < self.grace_seconds:
                    return False  # its writer may still be inserting it
            else:
                for raw in doc.get("outbox", []):
                    await self.publisher.publish(parse_event(raw))
                    self.published += 1
            await self.markers.delete_one({"_id": doc_id})
            return True
        finally:
            self._in_flight.discard(doc_id)
