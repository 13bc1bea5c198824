"""The scheduler's reads as history grows (part `history`): the coordination queue, a counsellor's
reservations for a day, the timers due on a day.

For each size the bench grows `requests`, `reservations` and `timers` to that many documents each
(the next size adds to the last), written with `insert_many` in exactly the shape the stores write
(`RequestStore.create`, `Reservations.reserve`, `TimerStore.arm`, markers included). What is
measured keeps its own volume at every size; history grows by more days, counsellors and offices:

- the coordination queue of one office (`RequestStore.of_office`, the waiting statuses): 20 waiting
  requests of `kushiro-gyosei`; the history is settled (confirmed) requests of every office and
  waiting ones of 40 other offices (2 %), each with its marker;
- a counsellor's reservations for one JST day (`schedule.day_of`, the console's counsellor page):
  8 booked cells and their confirmed requests; the history is other counsellors' and days' cells;
- the timers due on one JST day (`TimerStore.due_in`, what a take-over or the wheel's day load
  reads): 200 timers; the history is pending timers on 60 other days (those days do get fuller
  as the size grows: one collection a day on FerretDB, and 1,000,000 timers over as many days as
  200 a day would take would be 5,000 collections).

`docs_decoded`: what the read decodes on FerretDB (markers of its buckets and the documents it
reads by `_id`), independent of the size by construction. Uses its own database (`bench.env`
prefix) and drops it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any

from bench import env
from services.scheduler.keeper import Context
from services.scheduler.schedule import day_of
from services.scheduler.slots import SlotGrid, cell_id
from services.scheduler.store import RequestStore, TimerStore
from services.scheduler.store.requests import QUEUED
from services.scheduler.store.timers import WHEEL, due_day
from shared.clock import JST, FixedClock
from shared.mongo import Doc, connect
from shared.policy import Policies
from shared.store import outbox

OFFICE = "kushiro-gyosei"
COUNSELLOR = "kg-bench"
DAY = date(2027, 1, 15)  # a Friday: the measured counsellor's day and the timers' day
QUEUE, BOOKED, DUE_TIMERS = 20, 8, 200
HISTORY_DAYS = 60
CHUNK = 5000


def _request(bid: str, office: str, status: str, created: datetime, **more: Any) -> Doc:
    return {
        "_id": bid,
        "office_id": office,
        "status": status,
        "version": 1,
        "correlation_id": str(uuid.uuid4()),
        "created_at": created,
        "rev": 0,
        **more,
        **outbox.new_document_fields([]),
    }


def _appointment(counsellor: str, start: datetime) -> Doc:
    return {
        "counsellor_id": counsellor,
        "start": start,
        "end": start + timedelta(minutes=30),
        "version": 1,
        "app": "teams",
        "meeting_url": f"https://teams.example/meet/{uuid.uuid4().hex}",
    }


def _cell(counsellor: str, start: datetime, bid: str, now: datetime) -> Doc:
    return {
        "_id": cell_id(counsellor, start),
        "counsellor_id": counsellor,
        "start": start,
        "office_id": OFFICE,
        "booking_id": bid,
        "appointment_start": start,
        "kind": "booked",
        "option_id": None,
        "hold_until": None,
        "at": now,
    }


def _timer(tid: str, due: datetime, now: datetime) -> Doc:
    start = due - timedelta(minutes=10)
    return {
        "_id": f"{tid}:no_show:v1",
        "kind": "no_show",
        "booking_id": tid,
        "office_id": OFFICE,
        "version": 1,
        "due_at": due,
        "data": {"grace_seconds": 600.0, "start": start},
        "correlation_id": str(uuid.uuid4()),
        "status": "pending",
        "armed_at": now,
    }


class Seeder:
    def __init__(self, db: Any, now: datetime) -> None:
        self.db, self.now = db, now
        self.requests, self.timers = RequestStore(db), TimerStore(db)
        self.grid = SlotGrid(Policies.load(env.ROOT / "deploy" / "offices")[OFFICE])
        self.counts = {"requests": 0, "reservations": 0, "timers": 0}

    async def measured(self) -> None:
        """The measured office's queue, counsellor's day and timers' day (constant)."""
        docs = [
            _request(f"q-{k}", OFFICE, QUEUED[k % len(QUEUED)], self.now + timedelta(minutes=k))
            for k in range(QUEUE)
        ]
        cells = self.grid.day_cells(DAY)[:BOOKED]
        for k, start in enumerate(cells):
            appointment = _appointment(COUNSELLOR, start)
            docs.append(_request(f"d-{k}", OFFICE, "confirmed", self.now, appointment=appointment))
        await self._requests(docs)
        await self._insert(
            "reservations", [_cell(COUNSELLOR, s, f"d-{k}", self.now) for k, s in enumerate(cells)]
        )
        opens = datetime.combine(DAY, clock_time(9), JST)
        due = [_timer(f"t-{k}", opens + timedelta(seconds=30 * k), self.now) for k in range(DUE_TIMERS)]
        await self._timers(due)

    async def grow(self, size: int) -> None:
        """History up to `size` documents in each collection."""
        for name, add in (("requests", self._history_requests), ("reservations", self._history_cells)):
            while self.counts[name] < size:
                await add(self.counts[name], min(CHUNK, size - self.counts[name]))
        while self.counts["timers"] < size:
            await self._history_timers(self.counts["timers"], min(CHUNK, size - self.counts["timers"]))

    async def _history_requests(self, first: int, n: int) -> None:
        docs = []
        for i in range(first, first + n):
            created = self.now - timedelta(minutes=i)
            if i % 50 == 0:  # another office's queue
                docs.append(_request(f"h-{i}", f"office-{i % 40}", "needs_staff", created))
            else:
                appointment = _appointment(f"c-{i % 400}", created)
                docs.append(_request(f"h-{i}", OFFICE, "confirmed", created, appointment=appointment))
        await self._requests(docs)

    async def _history_cells(self, first: int, n: int) -> None:
        docs = []
        for i in range(first, first + n):
            # 400 other counsellors, 16 cells a day each, day after day from the measured one back
            cells = self.grid.day_cells(DAY - timedelta(days=1 + i // (400 * 16)))
            docs.append(_cell(f"c-{i % 400}", cells[(i // 400) % len(cells)], f"h-{i}", self.now))
        await self._insert("reservations", docs)

    async def _history_timers(self, first: int, n: int) -> None:
        docs = []
        for i in range(first, first + n):
            day = DAY + timedelta(days=1 + i % HISTORY_DAYS)
            due = datetime.combine(day, clock_time(9), JST) + timedelta(seconds=(i // HISTORY_DAYS) % 30000)
            docs.append(_timer(f"h-{i}", due, self.now))
        await self._timers(docs)

    async def _requests(self, docs: list[Doc]) -> None:
        queue = await self.requests.queue()
        by_bucket: dict[tuple[str, str], list[Doc]] = {}
        for d in docs:
            if d["status"] in QUEUED:
                by_bucket.setdefault((d["office_id"], d["status"]), []).append(
                    {"_id": d["_id"], "created_at": d["created_at"]}
                )
        for (office, status), markers in by_bucket.items():  # markers first, as `create` writes them
            await queue.add_many(office, status, markers)
        await self._insert("requests", docs)

    async def _timers(self, docs: list[Doc]) -> None:
        buckets = await self.timers.due_buckets()
        by_day: dict[date, list[Doc]] = {}
        for d in docs:
            by_day.setdefault(due_day(d["due_at"], d["armed_at"]), []).append(
                {"_id": d["_id"], "due_at": d["due_at"]}
            )
        for day, markers in by_day.items():
            await buckets.add_many(WHEEL, day, markers)
        await self._insert("timers", docs)

    async def _insert(self, name: str, docs: list[Doc]) -> None:
        await self.db[name].insert_many(docs, ordered=False)
        self.counts[name] += len(docs)


def _context(db: Any, now: datetime) -> Context:
    return Context.without_graph(db, Policies.load(env.ROOT / "deploy" / "offices"), FixedClock(now), "bench")


async def _timed(read: Callable[[], Awaitable[int]], runs: int) -> tuple[float, float, int]:
    """p50 and p95 in ms over `runs`, after one warm-up; the count the read returned."""
    found = await read()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await read()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) > 1 else samples[0]
    return statistics.median(samples), p95, found


async def run(sizes: list[int], runs: int = 50) -> list[dict[str, Any]]:
    """Seed to each size (ascending), time each read `runs` times; rows for bench/history.py."""
    prefix = f"benchhist{uuid.uuid4().hex[:8]}_"
    client = connect(env.MONGODB_URL, app_name="bench-history-scheduler", timeout_ms=60_000)
    db = client[f"{prefix}scheduler"]
    now = datetime.now(UTC)
    ctx = _context(db, now)
    seeder = Seeder(db, now)
    await ctx.requests.backfill_queue(now)  # an empty database: the markers are complete
    rows: list[dict[str, Any]] = []

    async def queue() -> int:
        return len(await ctx.requests.of_office(OFFICE, list(QUEUED)))

    async def counsellor_day() -> int:
        return len(await day_of(ctx, COUNSELLOR, OFFICE, DAY))

    async def timers_due() -> int:
        return len(await ctx.timers.due_in(DAY, DAY))

    reads = {
        "coordination queue (one office)": (queue, QUEUE * 2),  # markers + requests by _id
        "a counsellor's reservations for a day": (counsellor_day, BOOKED * 2),  # cells + requests
        "timers due on a day": (timers_due, DUE_TIMERS),  # the day's markers
    }
    try:
        await seeder.measured()
        for size in sorted(sizes):
            await seeder.grow(size)
            for name, (read, decoded) in reads.items():
                p50, p95, found = await _timed(read, runs)
                expected = {"coordination queue (one office)": QUEUE, "timers due on a day": DUE_TIMERS}
                if found != expected.get(name, BOOKED):
                    raise AssertionError(f"{name} at {size}: {found} found")
                rows.append(
                    {"read": name, "size": size, "p50_ms": p50, "p95_ms": p95, "docs_decoded": decoded}
                )
    finally:
        await client.drop_database(db.name)
        await client.close()
    return rows


if __name__ == "__main__":  # `python -m bench.history_scheduler 10000 100000`: this module alone
    import asyncio
    import sys

    chosen = [int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
    for row in asyncio.run(run(chosen)):
        print(f"{row['read']:<40} {row['size']:>9,} p50 {row['p50_ms']:8.2f} ms  p95 {row['p95_ms']:8.2f} ms")
