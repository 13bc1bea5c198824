"""MongoDB state of the intake guards: signatures already seen (replay) and rate-limit counters.

FerretDB has no TTL indexes and serves only `_id` lookups from an index, so both collections are
keyed by `_id` alone and carry `expires_at`; expired documents are deleted by a periodic sweep
(at most once per `sweep_every`, from the request path).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.mongo import Doc


class _Swept:
    def __init__(self, collection: AsyncCollection[Doc], sweep_every: timedelta) -> None:
        self.collection = collection
        self.sweep_every = sweep_every
        self._last_sweep: datetime | None = None

    async def sweep(self, now: datetime) -> None:
        if self._last_sweep is not None and now - self._last_sweep < self.sweep_every:
            return
        self._last_sweep = now
        await self.collection.delete_many({"expires_at": {"$lt": now}})


class SeenSignatures(_Swept):
    """Each signature is accepted once while its timestamp is inside the replay window."""

    async def first_time(self, signature_id: str, now: datetime, keep: timedelta) -> bool:
        await self.sweep(now)
        try:
            await self.collection.insert_one({"_id": signature_id, "expires_at": now + keep})
        except DuplicateKeyError:
            return False
        return True


class WindowCounters(_Swept):
    """Fixed-window counters, one document per key and window: correct across replicas."""

    async def hit(self, key: str, window: timedelta, now: datetime) -> tuple[int, datetime]:
        """Count one hit; the count in this window so far and when the window ends."""
        await self.sweep(now)
        seconds = int(window.total_seconds())
        start = int(now.timestamp()) // seconds * seconds
        end = datetime.fromtimestamp(start + seconds, now.tzinfo)
        for attempt in range(2):  # two first hits racing on the upsert: one inserts, the other retries
            try:
                doc = await self.collection.find_one_and_update(
                    {"_id": f"{key}@{start}"},
                    {"$inc": {"n": 1}, "$setOnInsert": {"expires_at": end}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                if attempt:
                    raise
                continue
            if doc is not None:
                return int(doc["n"]), end
        raise RuntimeError("unreachable: the upsert returns the document")
