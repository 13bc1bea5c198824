"""MongoDB state of the intake guards: signatures already seen (replay) and rate-limit slots.

FerretDB has no TTL indexes and serves only `_id` lookups from an index, so both collections are
keyed by `_id` alone and carry `expires_at`; expired documents are deleted by a periodic sweep
(at most once per `sweep_every`, from the request path).
"""

from __future__ import annotations

from datetime import datetime, timedelta

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


class WindowSlots(_Swept):
    """Fixed-window limits counted by unique inserts, correct under parallel requests and replicas.

    The n-th request admitted for a key in a window claims the document `<key>@<window start>:<n>`,
    for n up to the limit; an `_id` is inserted once, so at most `limit` requests are admitted however
    many arrive at once. (A counter raised with `$inc` lost increments: FerretDB runs an update as an
    unisolated read-modify-write.) This process hands the numbers out in order, so its own parallel
    requests never try the same one; a number another replica took is skipped by looking up, by `_id`
    alone, where the taken numbers end.
    """

    def __init__(self, collection: AsyncCollection[Doc], sweep_every: timedelta) -> None:
        super().__init__(collection, sweep_every)
        self._next: dict[str, tuple[int, datetime]] = {}  # window -> next number to try, window end

    async def admit(self, key: str, limit: int, window: timedelta, now: datetime) -> tuple[bool, datetime]:
        """Take a slot if one is left in this window; whether one was, and when the window ends."""
        await self.sweep(now)
        seconds = int(window.total_seconds())
        start = int(now.timestamp()) // seconds * seconds
        end = datetime.fromtimestamp(start + seconds, now.tzinfo)
        prefix = f"{key}@{start}"
        while (n := self._take(prefix, end)) <= limit:
            try:
                await self.collection.insert_one({"_id": f"{prefix}:{n}", "expires_at": end})
            except DuplicateKeyError:  # another replica took it: go on after the numbers taken
                self._skip_to(prefix, await self._first_free(prefix, n, limit), end)
                continue
            except BaseException:
                self._give_back(prefix, n, end)  # not taken: the next request may have it
                raise
            return True, end
        return False, end

    def _take(self, prefix: str, end: datetime) -> int:
        n = self._next.get(prefix, (1, end))[0]
        self._next[prefix] = (n + 1, end)
        return n

    def _skip_to(self, prefix: str, n: int, end: datetime) -> None:
        self._next[prefix] = (max(n, self._next.get(prefix, (1, end))[0]), end)

    def _give_back(self, prefix: str, n: int, end: datetime) -> None:
        self._next[prefix] = (min(n, self._next.get(prefix, (n, end))[0]), end)

    async def _first_free(self, prefix: str, taken: int, limit: int) -> int:
        """The first number after `taken` not yet taken (numbers are taken in order), by binary search."""
        lo, hi = taken, limit + 1  # lo is taken; hi is free (past the limit counts as free)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await self.collection.find_one({"_id": f"{prefix}:{mid}"}, {"_id": 1}) is None:
                hi = mid
            else:
                lo = mid
        return hi

    async def sweep(self, now: datetime) -> None:
        due = self._last_sweep is None or now - self._last_sweep >= self.sweep_every
        await super().sweep(now)
        if due:  # forget the numbers of windows that have ended
            self._next = {p: v for p, v in self._next.items() if v[1] > now}
