"""The day view: every chained record copied into its stream's JST day (of `occurred_at`), so that a
search, an export or a statistic of one office over a period reads that period's buckets only,
whatever the history (FerretDB decodes a whole collection for any filter but `{_id: value}`).

The chain (`records`) stays where a record is written first and what verification walks; the view is
a copy written right after the chain insert that took the record (`shared/store/buckets.py`, kind
`audit_day`: a collection per stream and day on FerretDB, one collection with a `bucket` index on
MongoDB). Records never change, so a copy is never stale; a copy is checked against its hash before
it is shown, and one that fails is replaced by the chain's record. A copy missing after a crash
between the two writes comes back with the redelivered event (the appender copies a record it finds
already chained), or with the rebuild the service runs after a start that did not follow a clean stop.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta

from services.audit import chain
from services.audit.search import Filters
from shared.clock import JST
from shared.mongo import Doc
from shared.store.buckets import Buckets

log = logging.getLogger(__name__)
KIND = "audit_day"
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
Canonical = Callable[[str], Awaitable[Doc | None]]


def scope_of(stream: str) -> str:
    """A stream's bucket scope: its name, or a digest of it for a name with other characters (an
    event's office id is whatever its producer wrote). Readers keep only their stream's copies."""
    return stream if _PLAIN.match(stream) else "h-" + hashlib.sha256(stream.encode()).hexdigest()[:40]


def day_of(at: datetime) -> date:
    return at.astimezone(JST).date()


def days(since: datetime, until: datetime) -> list[date]:
    """The JST days that [since, until) touches."""
    if until <= since:
        return []
    first, last = day_of(since), day_of(until - timedelta(milliseconds=1))
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


class DayView:
    def __init__(self, buckets: Buckets, key: bytes, canonical: Canonical) -> None:
        self.buckets = buckets
        self.key = key
        self.canonical = canonical

    async def add(self, docs: Sequence[Doc]) -> None:
        """Copy chained records into their days (one unordered insert per stream and day)."""
        groups: dict[tuple[str, date], list[Doc]] = {}
        for doc in docs:
            groups.setdefault((scope_of(str(doc["stream"])), day_of(doc["occurred_at"])), []).append(doc)
        for (scope, day), items in groups.items():
            await self.buckets.add_many(scope, day, items)

    async def remove(self, docs: Sequence[Doc]) -> None:
        """Retention: drop the copies of purged records (a day left empty goes whole)."""
        groups: dict[tuple[str, date], set[str]] = {}
        for doc in docs:
            key = (scope_of(str(doc["stream"])), day_of(doc["occurred_at"]))
            groups.setdefault(key, set()).add(str(doc["_id"]))
        for (scope, day), ids in groups.items():
            held = {str(d["_id"]) for d in await self.buckets.read(scope, day, {"_id": 1})}
            if held <= ids:
                await self.buckets.drop(scope, day)
                continue
            for rid in held & ids:
                await self.buckets.remove(scope, day, rid)

    async def day(self, stream: str, day: date) -> list[Doc]:
        return [d for d in await self.buckets.read(scope_of(stream), day) if d.get("stream") == stream]

    async def checked(self, copy: Doc) -> Doc | None:
        """The copy if it still hashes to its hash, else the chain's record (verify names the edit)."""
        if hmac.compare_digest(str(copy.get("hash", "")), chain.digest(self.key, copy)):
            return copy
        log.warning("audit day view: copy of %s does not match its hash; shown from the chain", copy["_id"])
        return await self.canonical(str(copy["_id"]))

    async def matching(
        self, f: Filters, stream: str, *, after: tuple[datetime, str] | None = None
    ) -> AsyncIterator[Doc]:
        """The records of `stream` matching `f` (which has both bounds), in (occurred_at, _id) order,
        after the position `after`; day by day, each day read once."""
        assert f.since is not None and f.until is not None
        for day in days(f.since, f.until):
            if after is not None and day < day_of(after[0]):
                continue
            rows = [
                d
                for d in await self.day(stream, day)
                if f.matches(d) and (after is None or (d["occurred_at"], str(d["_id"])) > after)
            ]
            rows.sort(key=lambda d: (d["occurred_at"], str(d["_id"])))
            for row in rows:
                shown = await self.checked(row)
                if shown is not None and f.matches(shown):
                    yield shown

    async def page(
        self, f: Filters, stream: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Doc]:
        out: list[Doc] = []
        async for doc in self.matching(f, stream, after=after):
            out.append(doc)
            if len(out) >= limit:
                break
        return out

    async def rebuild(self, records: AsyncIterable[Doc], chunk: int = 2000) -> int:
        """Copy every chained record (idempotent: copies present stay); the number read."""
        seen, batch = 0, []
        async for doc in records:
            batch.append(doc)
            seen += 1
            if len(batch) >= chunk:
                await self.add(batch)
                batch = []
        await self.add(batch)
        return seen
