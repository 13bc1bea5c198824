"""History part, audit: an office's day (first page of a search) and month (export) as the store grows.

`run(sizes, runs)` seeds the audit store to each size with exactly the documents the ingest path
writes (chained records in `records`, their copies in the day view, `audit_day` buckets), by bulk
insert, then times each read `runs` times through `AuditStore`, as the API calls it:

- `audit search (one office, one day, first page)`: `store.search`, 100 records of one JST day;
- `audit export of one month`: every row of `store.export` for the office's month, in chain order.

The measured office's own volume stays the same at every size: `DAY_RECORDS` records on each day of
the measured month (so the day holds `DAY_RECORDS`, the month 30 x as many); the history grows by
other offices and earlier days (also `DAY_RECORDS` a day, the shape the office's earlier years
would have). Everything lives in a database of the bench's own prefix, dropped at the end.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from bench import env
from examples import records as examples
from services.audit import chain, records
from services.audit.crypto import Pseudonymiser
from services.audit.search import Filters
from services.audit.store import AuditStore
from shared.events import new_event
from shared.mongo import Doc

OFFICE = "kushiro-gyosei"
DAY_RECORDS = 100
MONTH = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 2026-12-01 00:00 JST
MONTH_DAYS = 31
KEY = b"bench-history-audit-chain-key-0123456789"
CHUNK = 2000


class _Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def _template(at: datetime) -> Doc:
    """One access record as the ingest path builds it (pseudonyms, day and hour)."""
    clock = _Clock(at)
    event = new_event(
        examples.access_logged(at=at, actor="portal:bench"), office_id=OFFICE, producer="bench", clock=clock
    )
    pseudonymise = Pseudonymiser(b"bench-pseudonyms")
    return records.from_event(event, now=at, pseudonymise=pseudonymise).record


class _Seeder:
    """Writes records per stream in chain order (seq, prev_hash, hash) and their day-view copies."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self.heads: dict[str, tuple[int, str]] = {}
        self.base = _template(MONTH)
        self.count = 0

    def _record(self, stream: str, at: datetime) -> Doc:
        rid = str(uuid.uuid4())
        return {
            **self.base,
            "_id": rid,
            "event_id": rid,
            "correlation_id": rid,
            "stream": stream,
            "office_id": stream,
            "occurred_at": records.ms(at),
            "recorded_at": records.ms(at),
            **records._when(at),
        }

    async def day(self, stream: str, start: datetime, n: int) -> None:
        docs = [self._record(stream, start + timedelta(seconds=30 * i)) for i in range(n)]
        seq, prev = self.heads.get(stream, (0, chain.GENESIS))
        linked = chain.link(docs, after_seq=seq, prev_hash=prev, key=KEY)
        self.heads[stream] = (int(linked[-1]["seq"]), str(linked[-1]["hash"]))
        await self.store.records.insert_many(linked, ordered=False)
        await self.store.view.add(linked)
        self.count += n

    async def grow_to(self, size: int) -> None:
        """Other offices' days and this office's earlier days until the store holds `size` records."""
        offices = [f"office-{i:02d}" for i in range(10)]
        day = 0
        while self.count < size:
            day += 1
            for office in [*offices, OFFICE]:
                if self.count >= size:
                    return
                start = MONTH - timedelta(days=day) + timedelta(hours=1)
                await self.day(office, start, min(DAY_RECORDS, size - self.count))


async def _timed(read: Callable[[], Awaitable[int]], runs: int) -> tuple[float, float, int]:
    times: list[float] = []
    got = 0
    for _ in range(runs):
        started = time.perf_counter()
        got = await read()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times), p95, got


async def run(sizes: list[int], runs: int = 50) -> list[dict[str, Any]]:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(env.MONGODB_URL, tz_aware=True)
    prefix = f"histaudit{uuid.uuid4().hex[:8]}_"
    out: list[dict[str, Any]] = []
    try:
        store = AuditStore(client[f"{prefix}audit"], chain_key=KEY)
        await store.ensure_indexes()
        store.view_ready = True
        seeder = _Seeder(store)
        # the measured office's month, the same at every size (the history is written around it)
        for d in range(MONTH_DAYS):
            await seeder.day(OFFICE, MONTH + timedelta(days=d, hours=1), DAY_RECORDS)
        day = Filters(since=MONTH + timedelta(days=14), until=MONTH + timedelta(days=15), office_id=OFFICE)
        month = Filters(since=MONTH, until=MONTH + timedelta(days=MONTH_DAYS), office_id=OFFICE)

        async def search() -> int:
            return len(await store.search(day, 100))

        async def export() -> int:
            return sum([1 async for _ in store.export(month)])

        for size in sorted(sizes):
            await seeder.grow_to(size)
            for name, read, decoded in (
                ("audit search (one office, one day, first page)", search, DAY_RECORDS),
                ("audit export of one month", export, DAY_RECORDS * MONTH_DAYS),
            ):
                p50, p95, got = await _timed(read, runs)
                out.append(
                    {
                        "read": name,
                        "size": seeder.count,
                        "p50_ms": round(p50, 2),
                        "p95_ms": round(p95, 2),
                        "docs_decoded": decoded,
                        "rows": got,
                    }
                )
    finally:
        await client.drop_database(f"{prefix}audit")
        await client.close()
    return out


if __name__ == "__main__":  # a quick look: python -m bench.history_audit 10000 100000
    import asyncio
    import sys

    for row in asyncio.run(run([int(x) for x in sys.argv[1:]] or [10_000], runs=20)):
        print(row)
