"""The leading wheel's memory of the pending timers: id -> due time, in due order two ways.

FerretDB 1.x answers a query on `status`/`due_at` by decoding every timer (a cost that grows with
their number: docs/performance.md, finding 6), so the wheel reads the pending timers once, when it
takes the lease, and keeps them here; the feed adds the new ones. One heap yields what is due
(firing), the other what enters the arming horizon (APScheduler jobs). Both are lazy: an entry whose
timer was discarded or re-added is skipped when it comes up. A timer another replica cancels stays
here until its due time, when the firing reads it by `_id`, sees it is no longer pending and drops it
(the outcome insert decides in any case).
"""

from __future__ import annotations

import heapq
from datetime import datetime


class DueIndex:
    def __init__(self) -> None:
        self.due: dict[str, datetime] = {}
        self._by_due: list[tuple[datetime, str]] = []  # not yet handed out for firing
        self._unarmed: list[tuple[datetime, str]] = []  # not yet handed out for arming

    def __len__(self) -> int:
        return len(self.due)

    def __contains__(self, timer_id: object) -> bool:
        return timer_id in self.due

    def add(self, timer_id: str, due_at: datetime) -> bool:
        """Remember a pending timer; False if it was known already (with this due time)."""
        if self.due.get(timer_id) == due_at:
            return False
        self.due[timer_id] = due_at
        heapq.heappush(self._by_due, (due_at, timer_id))
        heapq.heappush(self._unarmed, (due_at, timer_id))
        return True

    def discard(self, timer_id: str) -> None:
        """Fired, cancelled or gone: forget it (its heap entries are skipped when they come up)."""
        self.due.pop(timer_id, None)

    def requeue(self, timer_id: str) -> None:
        """A timer handed out by `take_due` that could not fire: due again on the next look."""
        due = self.due.get(timer_id)
        if due is not None:
            heapq.heappush(self._by_due, (due, timer_id))

    def take_due(self, now: datetime, limit: int) -> list[tuple[str, datetime]]:
        """Up to `limit` timers due by `now`, earliest first; each stays known until discarded or
        requeued."""
        return self._take(self._by_due, now, limit)

    def take_arming(self, until: datetime) -> list[tuple[str, datetime]]:
        """The timers due by `until` not handed out for arming before, earliest first."""
        return self._take(self._unarmed, until, None)

    def clear(self) -> None:
        self.due.clear()
        self._by_due.clear()
        self._unarmed.clear()

    def _take(
        self, heap: list[tuple[datetime, str]], until: datetime, limit: int | None
    ) -> list[tuple[str, datetime]]:
        out: list[tuple[str, datetime]] = []
        while heap and heap[0][0] <= until and (limit is None or len(out) < limit):
            due, timer_id = heapq.heappop(heap)
            if self.due.get(timer_id) == due and (not out or out[-1][0] != timer_id):
                out.append((timer_id, due))
        return out
