"""Batched, idempotent, chained ingest.

The consumer's handler submits an entry and waits for the flush of its batch, so a message is
acknowledged only after its record is written. One flush runs at a time per process: the chain
append of a stream is serialised in the process, and across processes by the unique (stream, seq)
index with an *ordered* insert: a record refused (duplicate event, or seq taken by another writer)
stops the batch there, so no record ever lands after a gap or on a fork. The writer drops the
duplicate, or catches up with the other writer, re-links the rest and inserts again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.audit import chain
from services.audit.crypto import Sealer
from services.audit.records import Entry
from services.audit.store import AuditStore
from shared.messaging import TransientError
from shared.mongo import Doc

log = logging.getLogger(__name__)
MAX_CATCH_UPS = 20


@dataclass
class IngestStats:
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    catch_ups: int = 0
    largest_batch: int = 0
    write_seconds: float = 0.0  # time inside append(): what the database costs per batch


class Appender:
    """Appends entries to their streams' chains; callers must not run two appends at once."""

    def __init__(self, store: AuditStore, chain_key: bytes, sealer: Sealer, *, head_every: float = 0.0):
        self.store = store
        self.key = chain_key
        self.sealer = sealer
        self.head_every = head_every
        self.heads: dict[str, tuple[int, str]] = {}
        self.stats = IngestStats()
        self._dirty: set[str] = set()
        self._saved_at = 0.0

    async def save_heads(self) -> None:
        """Persist the heads moved since the last save (the batcher calls it whenever it goes idle)."""
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            try:
                await self.store.save_heads({s: self.heads[s] for s in dirty if s in self.heads})
            except Exception:
                self._dirty |= dirty
                raise
        self._saved_at = time.monotonic()

    async def append(self, entries: Sequence[Entry]) -> None:
        started = time.perf_counter()
        try:
            await self._append(entries)
        finally:
            self.stats.write_seconds += time.perf_counter() - started

    async def _append(self, entries: Sequence[Entry]) -> None:
        unique = list({e.id: e for e in entries}.values())  # one per event id (first position kept)
        # R11: raw device values are sealed before their record exists, so a record never lacks them
        await self.store.insert_sealed(
            [
                {"_id": e.id, "stream": e.stream, **self.sealer.seal(e.secrets, e.id)}
                for e in unique
                if e.secrets
            ]
        )
        pending: dict[str, list[Doc]] = {}
        for e in unique:
            pending.setdefault(e.stream, []).append(e.record)
        self._dirty |= set(pending)
        catch_ups = 0
        while pending:
            pending, caught_up = await self._insert(pending)
            catch_ups += caught_up
            if catch_ups > MAX_CATCH_UPS:
                raise TransientError("audit chain contended by another writer; try again later")
        # The head is a hint and the anchor against cutting the tail: under load, saved once per
        # `head_every` seconds rather than per batch: on FerretDB a head save is a write-lock round of
        # its own, as dear as the batch's insert (docs/performance.md, finding 13).
        if time.monotonic() - self._saved_at >= self.head_every:
            await self.save_heads()
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(entries))

    async def _insert(self, pending: dict[str, list[Doc]]) -> tuple[dict[str, list[Doc]], int]:
        """One ordered insert of every stream's records, each linked after its stream's head.

        Streams lie one after the other in the insert, so on a refusal the streams before it went
        in whole, its own stream up to it, the ones after not at all. Returns what is left to insert.
        """
        linked: list[Doc] = []
        for stream, docs in pending.items():
            seq, prev = await self._head(stream)
            linked += chain.link(docs, after_seq=seq, prev_hash=prev, key=self.key)
        inserted, refused = await self.store.insert_chained(linked)
        await self.store.view.add(linked[:inserted])  # the day view, once the chain holds them
        self.stats.stored += inserted
        for doc in linked[:inserted]:
            self.heads[doc["stream"]] = (int(doc["seq"]), str(doc["hash"]))
        if refused is None:
            return {}, 0
        left: dict[str, list[Doc]] = {}
        for doc, original in zip(linked[refused:], _flatten(pending, refused), strict=True):
            left.setdefault(doc["stream"], []).append(original)
        bad = linked[refused]
        if (stored := await self.store.record(str(bad["_id"]))) is not None:
            # already recorded: drop it, re-link the rest after what went in; its copy in the day view
            # again, in case a crash came between the chain insert and the copy (it was not acked then)
            await self.store.view.add([stored])
            self.stats.duplicates += 1
            left[bad["stream"]].pop(0)
            return {k: v for k, v in left.items() if v}, 0
        self.stats.catch_ups += 1  # another writer took this seq: go on from the stream's real end
        self.heads[bad["stream"]] = await self.store.tail(bad["stream"])
        return left, 1

    async def _head(self, stream: str) -> tuple[int, str]:
        if stream not in self.heads:
            doc = await self.store.head(stream) or await self.store.checkpoint(stream)
            self.heads[stream] = (int(doc["seq"]), str(doc["hash"])) if doc else (0, chain.GENESIS)
        return self.heads[stream]


def _flatten(pending: dict[str, list[Doc]], skip: int) -> list[Doc]:
    return [doc for docs in pending.values() for doc in docs][skip:]


Sink = Callable[[list[Entry]], Awaitable[None]]


class Batcher:
    """Group commit: entries submitted while a flush runs go together in the next one."""

    def __init__(
        self,
        sink: Sink,
        *,
        max_size: int = 256,
        linger: float = 0.002,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.sink = sink
        self.on_idle = on_idle
        self.max_size = max_size
        self.linger = linger
        self._items: list[tuple[Entry, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="audit-ingest")

    async def stop(self) -> None:
        """Flush what is queued, then end."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def submit(self, entry: Entry) -> None:
        """Returns once the entry's record is written (or already was); raises if the write failed."""
        if self._task is None or self._task.done():
            raise TransientError("audit ingest is not running")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._items.append((entry, fut))
        self._wake.set()
        await fut

    async def _run(self) -> None:
        while not (self._closing and not self._items):
            await self._wake.wait()
            if self.linger and 0 < len(self._items) < self.max_size and not self._closing:
                await asyncio.sleep(self.linger)
            self._wake.clear()
            while self._items:
                batch, self._items = self._items[: self.max_size], self._items[self.max_size :]
                await self._flush(batch)
            await self._idle()

    async def _idle(self) -> None:
        if self.on_idle is not None:
            try:
                await self.on_idle()
            except Exception as exc:  # a hint not saved now is saved at the next idle moment
                log.warning("audit ingest idle work failed: %s", exc)

    async def _flush(self, batch: list[tuple[Entry, asyncio.Future[None]]]) -> None:
        try:
            await self.sink([e for e, _ in batch])
        except Exception as exc:
            log.warning("audit batch of %d not written: %s", len(batch), exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)
