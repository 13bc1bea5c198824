"""Aggregates without lost updates on FerretDB: every change is an insert keyed by (id, version).

FerretDB 1.x applies an update as read-modify-write of the whole document without isolation:
concurrent conditional updates of one document can several report success, and concurrent `$push`es
lose entries (docs/performance.md, finding 13). Only an insert's unique `_id` is a reliable
compare-and-set. So:

- `<name>_changes` holds one document per version, `_id = "<id>:<version>"`, with the whole state at
  that version and the events of the change (outbox). Inserting version v+1 is the commit: of two
  writers that read version v, exactly one inserts v+1; the other gets Conflict, reads again, retries.
  Nothing updates these documents: the relay's pending work is a marker per change in
  `<name>_changes_pending` (`shared.store.outbox.announce`, inserted before the change).
- `<name>` holds the latest state per id, as a cache for listing and filtering. It is replaced after
  each commit and may lag (or briefly step back) under races: reads probe forward by `_id` lookups
  (`<id>:<v+1>`, the one query FerretDB answers from an index) until there is no newer version.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.events import Envelope
from shared.mongo import Doc
from shared.sealing import Sealer
from shared.store import outbox


class Conflict(Exception):
    """Someone else committed this version first: read again and retry."""


def change_id(aggregate_id: str, version: int) -> str:
    return f"{aggregate_id}:{version:08d}"


class VersionedStore:
    def __init__(
        self, heads: AsyncCollection[Doc], changes: AsyncCollection[Doc], sealer: Sealer | None = None
    ) -> None:
        self.heads = heads
        self.changes = changes
        self.sealer = sealer  # the change's events rest sealed (R12); the relay opens them
        self.on_write: Callable[[Any], None] = lambda _id: None  # wakes the outbox relay

    async def commit(self, aggregate_id: str, version: int, state: Doc, events: list[Envelope[Any]]) -> None:
        """Store `state` as `version` (the previous one + 1) with its events; Conflict if taken."""
        cid = change_id(aggregate_id, version)
        doc = {"_id": cid, "aggregate_id": aggregate_id, "version": version, "state": state}
        await outbox.announce(self.changes, cid, events)  # first: a crash after the insert loses nothing
        try:
            await self.changes.insert_one({**doc, **outbox.new_document_fields(events, sealer=self.sealer)})
        except DuplicateKeyError as exc:
            await outbox.withdraw(self.changes, cid, events)
            raise Conflict(cid) from exc
        if events:
            self.on_write(cid)
        await self._cache(aggregate_id, version, state)

    async def _cache(self, aggregate_id: str, version: int, state: Doc) -> None:
        """The head is a cache (`latest` probes forward from whatever it holds). Two upserts of a
        new head race on FerretDB, where the loser gets a duplicate key although its change is
        committed (a fresh-clone traffic run answered a portal 500 for it): then replace the head
        the other writer inserted, or leave it if that fails too."""
        head = {**state, "_id": aggregate_id, "version": version}
        try:
            await self.heads.replace_one({"_id": aggregate_id}, head, upsert=True)
        except DuplicateKeyError:
            with contextlib.suppress(DuplicateKeyError):
                await self.heads.replace_one({"_id": aggregate_id}, head)

    async def load(self, aggregate_id: str) -> Doc | None:
        """The latest state with its `version`, or None if the aggregate does not exist."""
        head = await self.heads.find_one({"_id": aggregate_id})
        return await self.latest(aggregate_id, head)

    async def latest(self, aggregate_id: str, head: Doc | None) -> Doc | None:
        """Probe forward from a cached head to the newest committed version."""
        version = head["version"] if head else 0
        state = head
        while True:
            newer = await self.changes.find_one({"_id": change_id(aggregate_id, version + 1)}, {"state": 1})
            if newer is None:
                break
            version += 1
            state = {**newer["state"], "_id": aggregate_id, "version": version}
        if state is not None and head is not None and state["version"] != head["version"]:
            await self._cache(
                aggregate_id, version, {k: v for k, v in state.items() if k not in ("_id", "version")}
            )
        return state

    async def find(self, query: Doc, *, sort: str, skip: int = 0, limit: int = 100) -> list[Doc]:
        """Heads matching a query, each brought up to date (a lagging head may have left the query)."""
        heads = await self.heads.find(query).sort(sort, 1).skip(skip).limit(limit).to_list()
        fresh = [await self.latest(h["_id"], h) for h in heads]
        return [d for d in fresh if d is not None]
