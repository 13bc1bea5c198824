"""Sign-in attempts, rate-limited by account and by client (unique-insert counters, read by `_id`).

A failed attempt takes the next free numbered slot of its key's current window: the insert of
`<scope>:<key>:<window>:<n>` succeeds for exactly one attempt (concurrent ones get the next number),
so counting needs no update and no filter but `_id` (FerretDB pushes down only `{_id: value}`).
Whether a key is locked is whether its slot number `limit` exists. Keys are keyed hashes: no person
id or address is stored in clear. Windows are fixed; old slots are deleted by the console's sweep.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.mongo import Doc


@dataclass(frozen=True)
class Limit:
    scope: str  # "account" or "client"
    limit: int
    window: timedelta


class Attempts:
    def __init__(self, collection: AsyncCollection[Doc], secret: str) -> None:
        self.collection = collection
        self._key = hashlib.sha256(f"console-ratelimit:{secret}".encode()).digest()

    def _slot(self, rule: Limit, who: str, now: datetime, n: int) -> str:
        keyed = hmac.new(self._key, f"{rule.scope}:{who}".encode(), hashlib.sha256).hexdigest()[:32]
        window = int(now.timestamp() // rule.window.total_seconds())
        return f"{rule.scope}:{keyed}:{window}:{n}"

    def retry_at(self, rule: Limit, now: datetime) -> datetime:
        """When the window `now` falls in ends."""
        seconds = rule.window.total_seconds()
        return datetime.fromtimestamp((now.timestamp() // seconds + 1) * seconds, now.tzinfo)

    async def locked(self, rule: Limit, who: str, now: datetime) -> bool:
        return await self.collection.find_one({"_id": self._slot(rule, who, now, rule.limit)}) is not None

    async def fail(self, rule: Limit, who: str, now: datetime) -> int:
        """Count a failed attempt; its number in the window (at most `limit`)."""
        low, high = 1, rule.limit  # slots fill in order: find the first free one by _id lookups
        while low < high:
            mid = (low + high) // 2
            if await self.collection.find_one({"_id": self._slot(rule, who, now, mid)}) is None:
                high = mid
            else:
                low = mid + 1
        for n in range(low, rule.limit + 1):
            try:
                await self.collection.insert_one({"_id": self._slot(rule, who, now, n), "at": now})
                return n
            except DuplicateKeyError:  # a concurrent attempt took it: the next number is ours
                continue
        return rule.limit

    async def sweep(self, before: datetime) -> int:
        """Delete the slots of windows that ended before `before` (a background job)."""
        done = await self.collection.delete_many({"at": {"$lt": before}})
        return done.deleted_count
