"""Part `history`, booking's reads as history grows: a day's consultations for one office, a booking
by id, the refusals list.

The bench seeds booking's collections in a database of its own (prefix `benchbk<run>_`, dropped
afterwards) with exactly the documents the store's write path writes (`BookingStore.to_doc`, the
version-1 change with its sealed `booking.requested` event, the day marker, the look-up slots; people
as `PersonStore.save` writes them, with their refusal markers), in bulk, growing the same database
from one size to the next. History grows by more days and more offices, never by a fatter day: every
(office, JST day) holds `PER_DAY` bookings, and the measured office has `REFUSED` people refused
whatever the size; the other offices have as many. Each read is then timed `runs` times through the
store (`BookingStore.find`, `.get`, `PersonStore.refused`). `docs_decoded` counts the documents the
server returned to one read; every read is by `_id` or of one whole bucket, so that is what it
decoded.

Sizes: 10,000 and 100,000 by default. 1,000,000 works (`--sizes 10000,100000,1000000`) but does not
fit a run on this 2-core machine: the bulk insert of booking-sized documents (sealed fields and a
sealed outbox event, about 3 KB each, twice: head and version) runs at 100–400 bookings/s on the
shared FerretDB/SQLite server, so 1,000,000 bookings and people would take hours.

Run alone: `python -m bench.history_booking [--sizes 10000,100000] [--runs 50]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pymongo import monitoring
from pymongo.asynchronous.database import AsyncDatabase

from bench import env
from bench.results import latency_ms
from examples.bookings import requested
from services.booking.crypto import Vault
from services.booking.domain import Booking, Person
from services.booking.refusals import PersonRecord, Refusal
from services.booking.store import Stores
from services.booking.store.bookings import DAYS, day_of
from services.booking.store.listings import CURRENT, marker_id
from shared.clock import JST, FixedClock
from shared.events import BookingRequested, TimeWindow, new_event
from shared.mongo import Doc, connect
from shared.store import outbox
from shared.store.versioned import change_id

OFFICE = "kushiro-gyosei"  # the measured office
FIRST_DAY = date(2021, 1, 4)  # the measured day: the first bucket seeded
DAYS_PER_OFFICE = 1250  # five years of open days
PER_DAY = 40  # bookings per office and day, at every size
PEOPLE_PER_OFFICE = 400
REFUSED = 20  # refused people per office, at every size
NOW = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
BATCH = 1000


class Returned(monitoring.CommandListener):
    """Documents the server returned (first and next batches of finds)."""

    def __init__(self) -> None:
        self.docs = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        cursor = event.reply.get("cursor") if event.command_name in ("find", "getMore") else None
        if cursor:
            self.docs += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def office_of(bucket: int) -> tuple[str, date]:
    """The n-th (office, day) bucket: the measured office's days first, then other offices'."""
    office, day = divmod(bucket, DAYS_PER_OFFICE)
    return (OFFICE if office == 0 else f"bench-office-{office:04d}"), FIRST_DAY + timedelta(days=day)


def booking(n: int, vault: Vault) -> Booking:
    office, day = office_of(n // PER_DAY)
    start = datetime.combine(day, datetime.min.time(), JST) + timedelta(hours=9, minutes=10 * (n % PER_DAY))
    person = Person(
        name="釧路 太郎",
        name_kana="クシロ タロウ",
        address="北海道釧路市幸町10-3",
        phone=f"+8115422{n % 100000:05d}",
        email=f"person{n}@example.jp",
    )
    key = vault.person_key(office, [("phone", person.phone or ""), ("email", person.email or "")])
    bid = uuid.uuid5(uuid.NAMESPACE_URL, f"bench-booking-{n}").hex
    return requested(office, start, NOW, person, booking_id=bid, person_key=key, portal_id="bench-portal")


def booking_docs(stores: Stores, b: Booking, clock: FixedClock) -> dict[str, list[Doc]]:
    """What `BookingStore.insert` writes for version 1, by collection."""
    state = stores.bookings.to_doc(b)
    place = day_of(state)
    state["placed"] = {DAYS: {"scope": place.scope, "key": place.key, "tag": "", "v": 1}}
    requested = BookingRequested(
        booking_id=b.booking_id,
        windows=[TimeWindow(start=w.start, end=w.end) for w in b.windows],
        duration_minutes=30,
    )
    event = new_event(requested, office_id=b.office_id, producer="booking", clock=clock)
    cid = change_id(b.booking_id, 1)
    change = {"_id": cid, "aggregate_id": b.booking_id, "version": 1, "state": state}
    fields = outbox.new_document_fields([event], sealer=stores.bookings.vault)
    slots = [
        {"_id": stores.bookings.lookups.slot(b.office_id, f, digest, 1), "booking_id": b.booking_id}
        for f, digest in state["lookup"].items()
    ]
    return {
        "bookings": [{**state, "_id": b.booking_id, "version": 1}],
        "booking_changes": [{**change, **fields, "outbox_pending": False}],  # the relay has sent it
        f"{DAYS}.{place.scope}.{place.key}": [
            {"_id": marker_id(b.booking_id, 1), "item": b.booking_id, "v": 1}
        ],
        "booking_lookups": slots,
    }


def person_docs(n: int) -> dict[str, list[Doc]]:
    """What `PersonStore.save` writes for a person's first version (refused ones with their marker)."""
    office_n, i = divmod(n, PEOPLE_PER_OFFICE)
    office = OFFICE if office_n == 0 else f"bench-office-{office_n:04d}"
    key = f"p_bench{n:09d}"
    record = PersonRecord(person_key=key, office_id=office)
    refused = i < REFUSED
    if refused:
        record.refusal = Refusal(
            "R13", "威圧的な言動（窓口で）", NOW - timedelta(days=3), None, "bench", "威圧的な言動"
        )
    state: Doc = {
        "office_id": office,
        "no_shows": [],
        "counted_from": record.counted_from,
        "refusal": asdict(record.refusal) if record.refusal else None,
        "review": None,
        "placed": {},
    }
    out: dict[str, list[Doc]] = {}
    if refused:
        tag = (NOW - timedelta(days=3)).isoformat(timespec="milliseconds")
        state["placed"] = {"refused_people": {"scope": office, "key": CURRENT, "tag": tag, "v": 1}}
        out[f"refused_people.{office}.{CURRENT}"] = [{"_id": marker_id(key, 1), "item": key, "v": 1}]
    change = {"_id": change_id(key, 1), "aggregate_id": key, "version": 1, "state": state}
    out["people"] = [{**state, "_id": key, "version": 1}]
    out["people_changes"] = [{**change, **outbox.new_document_fields([]), "outbox_pending": False}]
    return out


async def write(db: AsyncDatabase[Doc], docs: dict[str, list[Doc]]) -> None:
    """One collection after another: the shared FerretDB/SQLite server twice died of SIGBUS in its WAL
    code while this bench wrote ~30 collections of one database at once under a heavy load."""
    for name, batch in docs.items():
        if batch:
            await db[name].insert_many(batch, ordered=False)


def merged(parts: list[dict[str, list[Doc]]]) -> dict[str, list[Doc]]:
    out: dict[str, list[Doc]] = {}
    for part in parts:
        for name, docs in part.items():
            out.setdefault(name, []).extend(docs)
    return out


async def seed(
    db: AsyncDatabase[Doc], stores: Stores, start: int, end: int, say: Callable[[str], None]
) -> None:
    """Bookings and people number `start` to `end - 1`, in batches."""
    clock = FixedClock(NOW)
    began = time.perf_counter()
    for lo in range(start, end, BATCH):
        hi = min(lo + BATCH, end)
        parts = [booking_docs(stores, booking(n, stores.bookings.vault), clock) for n in range(lo, hi)]
        await write(db, merged(parts + [person_docs(n) for n in range(lo, hi)]))
        if (hi // BATCH) % 20 == 0:
            say(f"  seeded {hi:,} bookings and people ({time.perf_counter() - began:.0f} s)")


async def timed(
    read: Callable[[], Awaitable[Any]], runs: int, counter: Returned
) -> tuple[dict[str, float], int]:
    samples: list[float] = []
    decoded = 0
    for i in range(runs):
        before = counter.docs
        t = time.perf_counter()
        await read()
        samples.append(time.perf_counter() - t)
        if i == 0:
            decoded = counter.docs - before
    return latency_ms(samples), decoded


async def run(sizes: list[int], runs: int = 50, say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Seed to each size in turn and time the three reads; one row per read and size."""
    prefix = f"benchbk{uuid.uuid4().hex[:8]}_"
    counter = Returned()
    client = connect(env.MONGODB_URL, app_name="bench-history-booking", listeners=[counter])
    db = client[f"{prefix}booking"]
    stores = Stores.open(db, Vault.from_secret("bench-history-booking"))
    rows: list[dict[str, Any]] = []
    try:
        await stores.ensure_indexes()
        day = datetime.combine(FIRST_DAY, datetime.min.time(), JST)
        by_id = booking(PER_DAY // 2, stores.bookings.vault).booking_id
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "booking: a day's consultations (one office)": lambda: stores.bookings.find(
                OFFICE, after=day, before=day + timedelta(days=1), limit=100
            ),
            "booking: a booking by id": lambda: stores.bookings.get(by_id),
            "booking: the refusals list (one office)": lambda: stores.people.refused(OFFICE, NOW),
        }
        seeded = 0
        for size in sorted(sizes):
            say(f"history/booking: seeding to {size:,} bookings and {size:,} people")
            await seed(db, stores, seeded, size, say)
            seeded = size
            checks = {"day": len(await reads["booking: a day's consultations (one office)"]())}
            checks["refused"] = len(await stores.people.refused(OFFICE, NOW))
            assert checks == {"day": PER_DAY, "refused": REFUSED}, checks  # the reads answer right
            for name, read in reads.items():
                figures, decoded = await timed(read, runs, counter)
                rows.append(
                    {
                        "read": name,
                        "size": size,
                        "p50_ms": figures["p50"],
                        "p95_ms": figures["p95"],
                        "docs_decoded": decoded,
                    }
                )
                say(f"  {name}: p50 {figures['p50']} ms, p95 {figures['p95']} ms, {decoded} documents")
    finally:
        await client.drop_database(db.name)
        await client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    rows = asyncio.run(run([int(s) for s in args.sizes.split(",")], args.runs))
    print(json.dumps(rows, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
