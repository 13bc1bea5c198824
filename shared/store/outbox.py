"""Transactional outbox without transactions: events ride inside the aggregate's own document.

A state change and the events it causes are one write on one document (atomic in MongoDB and FerretDB
alike). Two relays publish them, with confirms; a crash between publish and bookkeeping republishes and
consumers dedupe by event id:

- `MarkedRelay`, for aggregates: the writer `announce`s the events in `<collection>_pending` before its
  write; the relay publishes what it finds in the document, records the ids in `<collection>_sent` and
  deletes the markers. It never writes the aggregate's documents.
- `OutboxRelay`, for carrier documents deleted once sent (access logs, device records): it looks for the
  indexed `outbox_pending` flag. Fields: `outbox` (list of event dicts), `outbox_sent` (how many were
  published), `outbox_pending`, `outbox_seq` (bumped by every append, so the relay never clears the flag
  over events appended while it was publishing).

R12: a writer given a `Sealer` keeps each event as `{event_id, type, sealed}`, the whole event sealed
with the event id bound in (`seal_event`); the relay opens it just before publishing (`open_event`).
The relays stay insert-only (nothing is rewritten once published), and what rests in the database
holds no personal data in clear, whether it is still pending or long published. Events kept without
a sealer (services whose events carry no personal data, documents from before) are published as
they are.
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
from shared.sealing import Sealer

log = logging.getLogger(__name__)
#: how long stop() lets a relay round in progress finish before cancelling it
STOP_GRACE_SECONDS = 5.0


class SealedEventError(Exception):
    """A sealed outbox event and no key to open it: the relay keeps it and says so."""


def _context(event_id: str) -> str:
    return f"outbox:{event_id}"


def seal_event(event: Envelope[Any], sealer: Sealer | None) -> Doc:
    """An event as an outbox keeps it: sealed whole if there is a sealer, as JSON otherwise."""
    if sealer is None:
        return event.model_dump(mode="json")
    event_id = str(event.event_id)
    return {
        "event_id": event_id,
        "type": event.type,
        "sealed": sealer.seal(event.model_dump_json(), _context(event_id)),
    }


def open_event(raw: Doc, sealer: Sealer | None) -> Envelope[Any]:
    """An outbox entry back to its event, opening it if it was sealed."""
    if "sealed" not in raw:
        return parse_event(raw)
    if sealer is None:
        raise SealedEventError(f"event {raw.get('event_id')} is sealed and this relay has no key")
    event = parse_event(sealer.open(str(raw["sealed"]), _context(str(raw.get("event_id")))))
    if str(event.event_id) != str(raw.get("event_id")):  # the context binds it; belt and braces
        raise SealedEventError(f"sealed event {raw.get('event_id')} opened as {event.event_id}")
    return event


def _stored(events: Sequence[Envelope[Any]], sealer: Sealer | None) -> list[Doc]:
    return [seal_event(e, sealer) for e in events]


async def seal_kept(collection: AsyncCollection[Doc], sealer: Sealer, *, settled: Doc | None = None) -> int:
    """Seal the outbox events that documents written before R12 keep in clear; returns how many
    documents were rewritten. Idempotent; event ids stay, so nothing published is published again.

    Only for documents nobody else writes any more (versioned changes; `settled`, e.g. a request
    whose answer is recorded): on FerretDB this `$set` is an unisolated read-modify-write, and a
    concurrent outbox append could be lost in it.
    """
    rewritten = 0
    async for doc in collection.find(settled or {}, {"outbox": 1}):
        kept: list[Doc] = doc.get("outbox") or []
        if all("sealed" in raw for raw in kept):
            continue
        sealed = [raw if "sealed" in raw else seal_event(parse_event(raw), sealer) for raw in kept]
        await collection.update_one({"_id": doc["_id"]}, {"$set": {"outbox": sealed}})
        rewritten += 1
    return rewritten


def append(events: Sequence[Envelope[Any]], *, sealer: Sealer | None = None) -> dict[str, Any]:
    """Update operators that add events to a document's outbox; merge them into the state change."""
    return {
        "$push": {"outbox": {"$each": _stored(events, sealer)}},
        "$set": {"outbox_pending": True},
        "$inc": {"outbox_seq": 1},
    }


def merge(
    update: dict[str, Any], events: Sequence[Envelope[Any]], *, sealer: Sealer | None = None
) -> dict[str, Any]:
    """One update document holding both the state change and the outbox append."""
    if not events:
        return update
    out = {k: dict(v) for k, v in update.items()}
    for op, fields in append(events, sealer=sealer).items():
        out.setdefault(op, {}).update(fields)
    return out


def new_document_fields(events: Sequence[Envelope[Any]], *, sealer: Sealer | None = None) -> Doc:
    """Outbox fields for a document inserted together with its first events (sealed with a sealer)."""
    return {
        "outbox": _stored(events, sealer),
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
        sealer: Sealer | None = None,
    ) -> None:
        self.collection = collection
        self.sealer = sealer  # opens the events their writers sealed (R12)
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
        self.scans = 0  # complete passes over the pending events (tests wait for one to finish)

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
        """End the loop after the round in progress, then publish what is still pending.

        The round is not cancelled: a publish cancelled while it waits for its confirm makes
        aiormq close the channel every publisher of the service shares, and the final drain then
        hung until the shutdown bound (`shared.runtime.SHUTDOWN_STEP_SECONDS`; docs/performance.md,
        finding 11). Only a round stuck past `STOP_GRACE_SECONDS` is.
        """
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
                    self.scans += 1
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
            await self.publisher.publish(open_event(raw, self.sealer))
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
    """Where a `MarkedRelay` of `collection` finds its work: one marker per announced write."""
    return collection.database[f"{collection.name}_pending"]


def sent_events(collection: AsyncCollection[Doc]) -> AsyncCollection[Doc]:
    """The ids of the events a `MarkedRelay` of `collection` has published (insert-only)."""
    return collection.database[f"{collection.name}_sent"]


async def announce(collection: AsyncCollection[Doc], doc_id: Any, events: Sequence[Envelope[Any]]) -> None:
    """Before a write that adds `events` to document `doc_id`: tell the relay to look for them.

    Called by the writer before its insert or update, so a crash after the write loses nothing: the
    relay publishes the events once it sees them in the document, and drops a marker whose events
    never arrive after its grace period (the writer crashed between the two; a writer whose write
    was refused `withdraw`s its marker).
    """
    if not events:
        return
    ids = [str(e.event_id) for e in events]
    with contextlib.suppress(DuplicateKeyError):  # a writer retrying the same write
        await pending_markers(collection).insert_one(
            {"_id": f"{doc_id}|{ids[0]}", "doc": doc_id, "events": ids, "at": time.time()}
        )


async def withdraw(collection: AsyncCollection[Doc], doc_id: Any, events: Sequence[Envelope[Any]]) -> bool:
    """After a write announced with `events` was refused (a unique insert or a revision check lost
    its race): drop its marker at once, rather than leave the relay waiting out the grace period
    for events that will never arrive. Returns whether the marker went.

    The document is read first: if the events are in it after all (a retry of a write that had
    landed), the marker stays and the relay publishes them."""
    if not events:
        return False
    ids = [str(e.event_id) for e in events]
    doc = await collection.find_one({"_id": doc_id}, {"outbox": 1})
    if any(str(raw.get("event_id")) == ids[0] for raw in (doc or {}).get("outbox", [])):
        return False
    deleted = await pending_markers(collection).delete_one({"_id": f"{doc_id}|{ids[0]}"})
    return deleted.deleted_count == 1


class MarkedRelay(OutboxRelay):
    """The outbox relay that never writes to the aggregate's documents.

    The events still ride inside the document, written in the same insert or update as the state
    change. What is pending is a small side collection of markers (`announce`, written by the writer
    just before) and what is published an insert-only collection of event ids. The flag-based relay
    marked each document after publishing; on FerretDB 1.x an update is a read-modify-write of the
    whole document without isolation, so that mark could overwrite a concurrent writer's change,
    outbox append included (an event silently lost), and it scanned the collection under the write
    lock. Here every write the relay makes is an insert or a delete in a collection as small as the
    backlog.

    A marker is settled when all its events are in the document and published; one whose events
    never appear is dropped after `grace_seconds` (its writer crashed; one whose write lost a race
    withdrew it). Documents of one aggregate (`<id>:<version>`, e.g. versioned changes) are
    published one after another in id order; a marker whose document does not exist yet (its writer
    is between `announce` and the insert) holds back the later ones of its aggregate.
    """

    def __init__(
        self,
        collection: AsyncCollection[Doc],
        publisher: EventPublisher,
        poll_seconds: float = 1.0,
        *,
        grace_seconds: float = 300.0,
        concurrency: int = 16,
        sealer: Sealer | None = None,
    ) -> None:
        super().__init__(collection, publisher, poll_seconds, concurrency=concurrency, sealer=sealer)
        self.markers = pending_markers(collection)
        self.sent = sent_events(collection)
        self.grace_seconds = grace_seconds
        self._published: dict[str, None] = {}  # recently published event ids (bounded, insertion order)

    async def ensure_indexes(self) -> None:
        """Once per collection: adopt what a flag-based relay left unsent (data from before markers)."""
        if await self.sent.find_one({"_id": _ADOPTED}) is not None:
            return
        async for doc in self.collection.find({"outbox_pending": True}, _PROJECTION):
            outbox: list[Doc] = doc.get("outbox", [])
            done = int(doc.get("outbox_sent", 0))
            for raw in outbox[:done]:
                await self._remember(str(raw.get("event_id")))
            if outbox[done:]:
                await announce(
                    self.collection, doc["_id"], [open_event(r, self.sealer) for r in outbox[done:]]
                )
        with contextlib.suppress(DuplicateKeyError):
            await self.sent.insert_one({"_id": _ADOPTED, "at": time.time()})

    async def backlog(self) -> int:
        return await self.markers.count_documents({})

    async def drain_ids(self, ids: set[Any]) -> None:
        while await self.drain_once():  # a poke only wakes the relay: the markers say what is pending
            pass

    async def drain_once(self, batch: int = 200) -> int:
        """One batch of markers; returns how many were settled (markers still waiting don't count)."""
        markers = await self.markers.find({}).sort("_id", 1).limit(batch).to_list()
        self.last_backlog = len(markers)
        by_doc: dict[Any, list[Doc]] = {}
        for m in markers:
            by_doc.setdefault(m["doc"], []).append(m)
        chains: dict[str, list[Any]] = {}
        for doc_id in sorted(by_doc, key=str):
            chains.setdefault(str(doc_id).rsplit(":", 1)[0], []).append(doc_id)

        async def chain(doc_ids: list[Any]) -> int:
            async with self._slots:
                settled = 0
                for doc_id in doc_ids:
                    n = await self._settle(doc_id, by_doc[doc_id])
                    if n is None:
                        break  # not written yet: the aggregate's later documents wait for it
                    settled += n
                return settled

        results = await asyncio.gather(*(chain(ids) for ids in chains.values()), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return sum(r for r in results if isinstance(r, int))

    async def _settle(self, doc_id: Any, markers: list[Doc]) -> int | None:
        """Publish the document's unpublished events in order; delete the markers they settle."""
        doc = await self.collection.find_one({"_id": doc_id}, {"outbox": 1})
        now = time.time()
        if doc is None and all(now - float(m.get("at", 0)) < self.grace_seconds for m in markers):
            return None
        present: set[str] = set()
        for raw in (doc or {}).get("outbox", []):
            event_id = str(raw.get("event_id"))
            present.add(event_id)
            if not await self._was_published(event_id):
                await self.publisher.publish(open_event(raw, self.sealer))
                self.published += 1
                await self._remember(event_id)
        settled = 0
        for m in markers:
            arrived = all(e in present for e in m.get("events", []))
            if arrived or now - float(m.get("at", 0)) >= self.grace_seconds:
                await self.markers.delete_one({"_id": m["_id"]})
                settled += 1
        return settled

    async def _was_published(self, event_id: str) -> bool:
        if event_id in self._published:
            return True
        return await self.sent.find_one({"_id": event_id}, {"_id": 1}) is not None

    async def _remember(self, event_id: str) -> None:
        with contextlib.suppress(DuplicateKeyError):  # another replica published it too
            await self.sent.insert_one({"_id": event_id})
        self._published[event_id] = None
        if len(self._published) > 10_000:
            self._published.pop(next(iter(self._published)))


_ADOPTED = "~adopted-flagged-documents"
