"""Every secondary index of the scheduler's collections, in one place, created at start-up.

On FerretDB 1.x only `{_id: value}` filters use an index, so the reads a person or a handler waits
for are laid out by `_id` or in bounded buckets (shared/store/buckets.py); on MongoDB the same reads
use the indexes below. The service README's "Reads and indexes" table says which read uses which.
"""

from __future__ import annotations

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from services.scheduler.store.requests import RequestStore
from services.scheduler.store.timers import TimerStore
from shared.mongo import Doc

#: collection -> (keys, unique) for the reads that filter on more than `_id`
INDEXES: dict[str, list[tuple[list[tuple[str, int]], bool]]] = {
    # the double-booking guard (the `_id` is the same pair) and a counsellor's day on a fine grid
    "reservations": [
        ([("counsellor_id", ASCENDING), ("start", ASCENDING)], True),
        # `release` / `of_booking`: a booking's cells
        ([("booking_id", ASCENDING)], False),
        # `taken`: the office's cells in the search window (placing a request, free slots)
        ([("office_id", ASCENDING), ("start", ASCENDING)], False),
    ],
    # the operator's timer list (`consultctl timers`, `GET /v1/staff/timers`) and the markers' backfill
    "timers": [([("status", ASCENDING), ("due_at", ASCENDING)], False), ([("booking_id", ASCENDING)], False)],
    # `CounsellorStore.of_office`
    "counsellors": [([("office_id", ASCENDING), ("active", ASCENDING)], False)],
    # `StaffKeyStore.revoke` (every key of a staff id)
    "staff_keys": [([("subject", ASCENDING)], False)],
}


async def ensure(db: AsyncDatabase[Doc]) -> None:
    """Create the indexes (idempotent); the bucket indexes only where the layout needs them."""
    for name, indexes in INDEXES.items():
        for keys, unique in indexes:
            await db[name].create_index(keys, unique=unique)
    await (await TimerStore(db).due_buckets()).ensure_indexes()  # `timer_due.bucket_1`
    await (await RequestStore(db).queue()).ensure_indexes()  # `coordination_queue.bucket_1`
