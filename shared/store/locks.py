"""Per-key locks within one process.

On FerretDB a revision-checked update is a read, then a write: two writers of one document in one
process could both pass the check. Where a service's handlers, timers and staff routes all change
one aggregate, they take its key's lock first, so within a process they queue up instead; across
processes, the unique insert (versioned commit, timer outcome, grid cell) still decides.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class KeyedLocks:
    """One lock per booking or person within this process: concurrent deliveries (prefetch), timers
    and staff actions queue up instead of colliding. Not re-entrant: take it at the entry points."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._users: dict[str, int] = defaultdict(int)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        self._users[key] += 1
        try:
            async with self._locks[key]:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]
