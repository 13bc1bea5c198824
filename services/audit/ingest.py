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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from services.audit import chain
from services.audit.crypto import Sealer
from services.audit.records import Entry
from services.audit.store import AuditStore
from shared.messaging import TransientError

log = logging.getLogger(__name__)
MAX_CATCH_UPS = 20


@dataclass
class IngestStats:
    batches: int = 0
    stored: int = 0
    duplicates: int = 0
    catch_ups: int = 0
    largest_batch: int = 0


class Appender:
    """Appends entries to their streams' chains; callers must not run two appends at once."""

    def __init__(self, store: AuditStore, chain_key: bytes, sealer: Sealer) -> None:
        self.store = store
        self.key = chain_key
        self.sealer = sealer
        self.heads: dict[str, tuple[int, str]] = {}
        self.stats = IngestStats()

    async def append(self, entries: Sequence[Entry]) -> None:
        unique = list({e.id: e for e in entries}.values())  # one per event id (first position kept)
        # R11: raw device values are sealed before their record exists, so a record never lacks them
        await self.store.insert_sealed(
            [
                {"_id": e.id, "stream": e.stream, **self.sealer.seal(e.secrets, e.id)}
                for e in unique
                if e.secrets
            ]
        )
        streams: dict[str, list[Entry]] = {}
        for e in unique:
            streams.setdefault(e.stream, []).append(e)
        for stream, group in streams.items():
            await self._append_stream(stream, [e.record for e in group])
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(entries))

    async def _append_stream(self, stream: str, pending: list[dict[str, object]]) -> None:
        catch_ups = 0
        while pending:
            seq, prev = await self._head(stream)
            linked = chain.link(pending, after_seq=seq, prev_hash=prev, key=self.key)
            inserted, refused = await self.store.insert_chained(linked)
            if inserted:
                last = linked[inserted - 1]
                self.heads[stream] = (int(last["seq"]), str(last["hash"]))
                self.stats.stored += inserted
            if refused is None:
                break
            if await self.store.has_record(str(linked[refused]["_id"])):
                self.stats.duplicates += 1  # already recorded: drop it, link the rest after what went in
                pending = pending[refused + 1 :]
                continue
            catch_ups += 1  # another writer took this seq: continue from the stream's real end
            self.stats.catch_ups += 1
            if catch_ups > MAX_CATCH_UPS:
                raise TransientError(f"stream {stream}: chain contended, try again later")
            self.heads[stream] = await self.store.tail(stream)
            pending = pending[refused:]
        if stream in self.heads:
            await self.store.save_head(stream, *self.heads[stream])

    async def _head(self, stream: str) -> tuple[int, str]:
        if stream not in self.heads:
            doc = await self.store.head(stream) or await self.store.checkpoint(stream)
            self.heads[stream] = (int(doc["seq"]), str(doc["hash"])) if doc else (0, chain.GENESIS)
        return self.heads[stream]


Sink = Callable[[list[Entry]], Awaitable[None]]


class Batcher:
    """Group commit: entries submitted while a flush runs go together in the next one."""

    def __init__(self, sink: Sink, *, max_size: int = 256, linger: float = 0.002) -> None:
        self.sink = sink
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
