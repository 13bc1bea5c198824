"""Unique inserts from concurrent callers, sent as one `insert_many` per round (a group commit).

On FerretDB (SQLite) every write is a transaction under the database's one write lock: 32 concurrent
`insert_one` calls took about as long as 32 sequential ones (~2–4 ms each), one `insert_many` of the
same 32 documents 2–3 ms in all. A consumer handles its prefetch window concurrently, so the inbox's
claims and done markers of the deliveries in flight arrive together: `GroupedInserts.insert` queues a
document and awaits its own outcome, and one round at a time sends everything queued since the last
round began (`ordered=False`, so each document succeeds or fails on its own). Nothing waits for a
timer: a lone caller's round starts at the next turn of the event loop, and callers that arrive while
a round is at the server form the next one, so rounds grow with the load and shrink with it.

Each caller gets what its own `insert_one` would have given: True (inserted), False (that `_id`
exists: a duplicate key, also against another document of the same round), or the error. A caller
cancelled while its document is on the way (a delivery cut off by a dropped connection) cannot be
told; `abandoned` is called with each such document that was inserted, so its owner can undo it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, WriteError

from shared.mongo import DUPLICATE_KEY, Doc

log = logging.getLogger(__name__)

#: documents per insert_many at most (MongoDB's own limit is far higher; this bounds one round's wait)
MAX_ROUND = 500


class GroupedInserts:
    def __init__(
        self,
        collection: AsyncCollection[Doc],
        *,
        abandoned: Callable[[Doc], Awaitable[None]] | None = None,
        max_round: int = MAX_ROUND,
    ) -> None:
        self.collection = collection
        self.abandoned = abandoned
        self.max_round = max_round
        self._queued: list[tuple[Doc, asyncio.Future[bool]]] = []
        self._rounds: asyncio.Task[None] | None = None
        #: rounds sent and documents in them (the bench reads them: documents per round)
        self.sent_rounds = 0
        self.sent_documents = 0

    async def insert(self, doc: Doc) -> bool:
        """Insert `doc` in the next round: True if inserted, False if its `_id` exists."""
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.append((doc, outcome))
        if self._rounds is None:
            self._rounds = asyncio.create_task(self._run(), name=f"grouped-inserts:{self.collection.name}")
        return await outcome

    async def _run(self) -> None:
        try:
            while self._queued:
                await asyncio.sleep(0)  # the callers woken in this turn of the loop join the round
                batch, self._queued = self._queued[: self.max_round], self._queued[self.max_round :]
                await self._send(batch)
        finally:
            self._rounds = None
            if self._queued:  # cancelled with callers waiting (loop shutting down): fail them, not hang
                for _, outcome in self._queued:
                    if not outcome.done():
                        outcome.cancel()
                self._queued = []

    async def _send(self, batch: list[tuple[Doc, asyncio.Future[bool]]]) -> None:
        results: list[bool | BaseException] = [True] * len(batch)
        try:
            await self.collection.insert_many([doc for doc, _ in batch], ordered=False)
        except BulkWriteError as exc:
            for err in exc.details.get("writeErrors", []):
                i = int(err["index"])
                code = err.get("code")
                results[i] = False if code == DUPLICATE_KEY else WriteError(err.get("errmsg", ""), code, err)
        except BaseException as exc:  # the server away: every caller gets the error, as insert_one would
            if isinstance(exc, asyncio.CancelledError):
                for _, outcome in batch:
                    if not outcome.done():
                        outcome.cancel()
                raise
            results = [exc] * len(batch)
        self.sent_rounds += 1
        self.sent_documents += len(batch)
        undo = []
        for (doc, outcome), result in zip(batch, results, strict=True):
            if outcome.done():  # the caller was cancelled while its document was on the way
                if result is True:
                    undo.append(doc)
            elif isinstance(result, BaseException):
                outcome.set_exception(result)
            else:
                outcome.set_result(result)
        if self.abandoned is not None:
            for doc in undo:
                try:
                    await self.abandoned(doc)
                except Exception:
                    log.exception("%s: undoing an abandoned insert failed", self.collection.name)
