"""Conditional writes by `_id` (shared.store.conditional.update_if and friends) on the real server.

On FerretDB 1.x any filter other than `{_id: value}` decodes the collection from its first document
to the match: a revision-checked update of the newest of 20,000 requests took 1.7 s. The helpers
send `_id` alone there and check the condition on the document read by `_id`; these tests hold them
to the condition's meaning and, on FerretDB, to `_id`-only filters, also for the stores that use them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifier.domain import Kind, Notice, Recipient
from services.notifier.store import Busy, Claim, Deliveries
from services.scheduler.store.requests import RequestStore
from shared.clock import FixedClock
from shared.mongo import Doc, connect
from shared.store.backend import is_ferretdb
from shared.store.conditional import delete_if, find_one_and_update_if, matches, update_if
from tests import support
from tests.support import CommandShapes

T0 = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)


@pytest.fixture
async def watched(db_prefix: str) -> AsyncIterator[tuple[Any, CommandShapes]]:
    filters = CommandShapes()
    client = connect(support.MONGODB_URL, app_name="test-conditional", listeners=[filters])
    try:
        yield client[f"{db_prefix}conditional"], filters
    finally:
        await client.close()


def test_matches_is_equality_or_a_comparison_and_a_missing_field_equals_only_none() -> None:
    doc: Doc = {"rev": 2, "state": "claimed", "lease_until": T0}
    assert matches(doc, {"rev": 2, "state": "claimed"})
    assert not matches(doc, {"rev": 1})
    assert matches(doc, {"lease_until": {"$lte": T0}}) and not matches(doc, {"lease_until": {"$lt": T0}})
    assert matches(doc, {"lease_until": {"$gt": T0 - timedelta(seconds=1), "$lte": T0}})
    assert not matches(doc, {"permanent": False}) and matches(doc, {"permanent": None})
    assert not matches({"lease_until": None}, {"lease_until": {"$lte": T0}})
    with pytest.raises(ValueError, match=r"\$ne"):
        matches(doc, {"rev": {"$ne": 1}})


async def test_conditional_writes_keep_their_condition_and_send_only_id_filters(
    watched: tuple[Any, CommandShapes],
) -> None:
    db, filters = watched
    col = db["docs"]
    await col.insert_many(
        [{"_id": f"d{i}", "rev": 0, "state": "claimed", "lease_until": T0} for i in range(5)]
        + [{"_id": "bare"}]
    )
    filters.on = True

    assert await update_if(col, "d1", {"rev": 0}, {"$inc": {"rev": 1}})
    assert not await update_if(col, "d1", {"rev": 0}, {"$inc": {"rev": 1}})  # a stale revision
    assert (await col.find_one({"_id": "d1"}))["rev"] == 1
    assert not await update_if(col, "nobody", {"rev": 0}, {"$set": {"rev": 9}})
    assert await col.find_one({"_id": "nobody"}) is None
    assert not await update_if(col, "bare", {"permanent": False}, {"$set": {"x": 1}})  # missing is not False
    assert await update_if(col, "bare", {"permanent": None}, {"$set": {"x": 1}})  # but is None, as on MongoDB

    expired = {"state": "claimed", "lease_until": {"$lte": T0}}
    before = await find_one_and_update_if(col, "d2", expired, {"$set": {"state": "sent"}})
    assert before is not None and before["state"] == "claimed"
    assert await find_one_and_update_if(col, "d2", expired, {"$set": {"state": "again"}}) is None
    assert await find_one_and_update_if(col, "d3", {"lease_until": {"$lt": T0}}, {"$set": {"x": 1}}) is None

    assert not await delete_if(col, "d4", {"state": "sent"})
    assert await delete_if(col, "d4", {"state": "claimed"})
    assert await col.find_one({"_id": "d4"}) is None
    filters.on = False

    assert (await col.find_one({"_id": "d2"}))["state"] == "sent"
    assert (await col.find_one({"_id": "d3"})).get("x") is None
    if await is_ferretdb(db.client):
        assert filters.scans() == []


async def test_the_scheduler_requests_and_notifier_deliveries_write_by_id_alone(
    watched: tuple[Any, CommandShapes],
) -> None:
    db, filters = watched
    requests = RequestStore(db)
    await requests.create(
        {"_id": "b-1", "office_id": "kushiro-gyosei", "status": "coordinating", "version": 1}
    )
    clock = FixedClock(T0)
    deliveries = Deliveries(db["deliveries"], clock, timedelta(seconds=60))
    notice = Notice(
        kind=Kind.CONFIRMATION,
        key="b-1:confirmation:v1",
        office_id="kushiro-gyosei",
        booking_id="b-1",
        recipient=Recipient(name="山田 太郎", email="taro@example.org"),
        subject="ご予約の確定",
    )
    filters.on = True

    doc = await requests.get("b-1")
    assert doc is not None
    assert await requests.update(doc, {"status": "confirmed"})
    assert not await requests.update(doc, {"status": "declined"})  # read before the first change

    first = await deliveries.claim(notice, "m-1", "e-1")
    assert isinstance(first, Claim)
    assert isinstance(await deliveries.claim(notice, "m-1", "e-1"), Busy)  # the lease is live
    clock.advance(timedelta(seconds=61))
    second = await deliveries.claim(notice, "m-1", "e-1")  # the first holder vanished mid-send
    assert isinstance(second, Claim) and second.resumed and second.attempt == 2
    assert not await deliveries.mark_sent(first, "250 OK", [])  # taken over: its token is stale
    assert await deliveries.mark_sent(second, "250 OK", [])
    filters.on = False

    stored = await requests.get("b-1")
    assert stored is not None and (stored["status"], stored["rev"]) == ("confirmed", 1)
    sent = await deliveries.get(notice.key)
    assert sent is not None and sent["state"] == "sent"
    if await is_ferretdb(db.client):
        assert filters.scans() == []
