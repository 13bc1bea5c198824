"""The coordination queue on the real server: read from the office's markers of the waiting
statuses and each request by `_id`, right through moves, cancellations, stale markers, a
concurrent move back, and requests stored before the markers (backfill)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.scheduler.store import RequestStore
from shared.mongo import connect
from tests.support import MONGODB_URL, CommandShapes
from tests.support.scheduler import HW, KG, jst

NOW = jst(2026, 11, 30, 9, 0)


@pytest.fixture
async def db(mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str) -> AsyncIterator[Any]:
    yield mongo[f"{db_prefix}scheduler"]


@pytest.fixture
async def store(db: Any) -> RequestStore:
    requests = RequestStore(db)
    await requests.backfill_queue(NOW)  # an empty database: markers from the start
    return requests


async def _create(store: RequestStore, bid: str, status: str, office: str = HW, minute: int = 0) -> None:
    doc = {"_id": bid, "office_id": office, "status": status, "version": 0, "correlation_id": "c"}
    assert await store.create({**doc, "created_at": NOW + timedelta(minutes=minute)})


async def _move(store: RequestStore, bid: str, status: str) -> None:
    doc = await store.get(bid)
    assert doc is not None and await store.update(doc, {"status": status})


async def _queue(store: RequestStore, office: str = HW, statuses: tuple[str, ...] = ()) -> list[str]:
    chosen = list(statuses) or ["coordinating", "proposed", "needs_staff", "declined", "hold_expired"]
    return [d["_id"] for d in await store.of_office(office, chosen)]


async def test_the_queue_reads_only_the_offices_waiting_markers_and_each_request_by_id(
    store: RequestStore, db: Any
) -> None:
    await _create(store, "w-2", "needs_staff", minute=2)
    await _create(store, "w-1", "proposed", minute=1)
    await _create(store, "w-3", "coordinating", minute=3)
    # history the read must not depend on: the office's settled requests and another office's queue
    for k in range(60):
        await _create(store, f"done-{k}", "confirmed", minute=10 + k)
    await _create(store, "kg-1", "needs_staff", office=KG)
    listener = CommandShapes()
    client = connect(MONGODB_URL, app_name="test-queue", listeners=[listener])
    try:
        reader = RequestStore(client[db.name])
        listener.on = True
        assert await _queue(reader) == ["w-1", "w-2", "w-3"]  # oldest first
        assert await _queue(reader, statuses=("needs_staff",)) == ["w-2"]
        assert not [q for q in listener.scans() if q[1] == "requests"], "requests read by _id only"
        buckets = {q[1] for q in listener.seen if q[0] == "find" and q[2] != "id"}
        assert buckets <= {
            f"coordination_queue.{HW}.{s}"
            for s in ("coordinating", "proposed", "needs_staff", "declined", "hold_expired")
        }
    finally:
        await client.close()
    assert await _queue(store, office=KG) == ["kg-1"]


async def test_moves_and_cancellations_take_a_request_out_of_the_queue_and_back(store: RequestStore) -> None:
    await _create(store, "b-1", "coordinating")
    await _move(store, "b-1", "proposed")
    assert await _queue(store, statuses=("coordinating",)) == []
    assert await _queue(store, statuses=("proposed",)) == ["b-1"]
    await _move(store, "b-1", "confirmed")
    assert await _queue(store) == []
    await _move(store, "b-1", "needs_staff")  # staff moves it back (reopen path)
    assert await _queue(store) == ["b-1"]
    await store.cancel("b-1", HW, {"cancelled_at": NOW})
    assert await _queue(store) == []
    # a revision lost to another writer leaves no marker of the status it did not write
    await _create(store, "b-2", "coordinating")
    read = await store.get("b-2")
    assert read is not None
    await _move(store, "b-2", "needs_staff")
    assert not await store.update(read, {"status": "proposed"})
    assert await _queue(store, statuses=("proposed",)) == [] and await _queue(store) == ["b-2"]


async def test_a_stale_marker_is_not_believed_and_a_concurrent_move_back_keeps_its_marker(
    store: RequestStore, db: Any
) -> None:
    await _create(store, "b-stale", "confirmed")
    queue = await store.queue()
    # a crash after the marker, before the write; and a marker of a request that never got stored
    await queue.add(HW, "needs_staff", "b-stale", {"created_at": NOW})
    await queue.add(HW, "needs_staff", "b-never", {"created_at": NOW})
    assert await _queue(store) == []
    assert await queue.read(HW, "needs_staff") == [], "the reader dropped both"
    # a reader drops a marker just as a writer moves the request back into that status: the
    # re-read after the removal puts it back
    await _create(store, "b-back", "needs_staff")
    await db["requests"].update_one({"_id": "b-back"}, {"$set": {"status": "confirmed"}})  # moved on
    await _move(store, "b-back", "needs_staff")  # and back, its marker kept (already there)
    await store._dequeue(HW, "needs_staff", "b-back")  # a reader that saw it confirmed
    assert await _queue(store) == ["b-back"]


async def test_requests_stored_before_the_markers_are_listed_and_then_backfilled(db: Any) -> None:
    old = [
        {"_id": f"old-{k}", "office_id": HW, "status": s, "created_at": NOW + timedelta(minutes=k), "rev": 0}
        for k, s in enumerate(["needs_staff", "confirmed", "proposed", "cancelled", "hold_expired"])
    ]
    await db["requests"].insert_many(old)
    store = RequestStore(db)
    assert not await store.queue_ready()
    assert await _queue(store) == ["old-0", "old-2", "old-4"]  # by the query until the backfill
    assert await store.backfill_queue(NOW) == 3
    assert await store.backfill_queue(NOW) == 3  # idempotent
    fresh = RequestStore(db)
    assert await fresh.queue_ready() and await _queue(fresh) == ["old-0", "old-2", "old-4"]
    assert sorted(m["_id"] for m in await (await fresh.queue()).read(HW, "needs_staff")) == ["old-0"]
