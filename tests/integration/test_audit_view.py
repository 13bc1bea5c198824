"""The day view (services/audit/view.py): an office's search, export and statistics over a period read
that office's days only, answer what the chain holds, and survive a crash between the two writes."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from services.audit import chain, records
from services.audit.search import Filters
from services.audit.store import AuditStore
from shared.events import BookingCompleted
from tests.integration.test_audit_ingest import requested
from tests.support import MONGODB_URL, eventually
from tests.support.audit import OFFICE, T0, Audit, auth, running_audit

OTHER = "hellowork-kohoku"
DAY = {"from": T0.replace(hour=0).isoformat(), "to": (T0.replace(hour=0) + timedelta(days=1)).isoformat()}
# T0 is 10:00 JST on 2026-12-01; DAY is 09:00 JST on the 1st to 09:00 JST on the 2nd (two JST days)


@pytest.fixture
async def audit(make_settings: Callable[..., Any]) -> AsyncIterator[Audit]:
    async with running_audit(make_settings) as a:
        await eventually(lambda: _ready(a), what="the day view ready")
        yield a


async def _ready(a: Audit) -> bool:
    return a.service.store.view_ready


class Commands(monitoring.CommandListener):
    """The collections each command names: how the test sees what a read touched (FerretDB has no explain)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        target = event.command.get(event.command_name)
        if event.command_name in ("find", "aggregate", "count", "distinct"):
            self.seen.append((event.command_name, str(target)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def seed(audit: Audit) -> list[str]:
    """Six records of the office on the 1st (JST), others on other days and in another office."""
    ids: list[str] = []
    for i in range(6):
        audit.clock.advance(timedelta(minutes=1))
        ids.append(str((await audit.append(requested(f"b-{i}"))).event_id))
    for days in (-3, 2, 40):
        audit.clock.set(T0 + timedelta(days=days))
        await audit.append(requested(f"elsewhen-{days}"))
    audit.clock.set(T0 + timedelta(minutes=30))
    await audit.append(requested("other-office"), office=OTHER)
    return ids


async def test_an_offices_day_is_read_from_its_own_bucket_only_and_pages_by_record_id(audit: Audit) -> None:
    ids = await seed(audit)
    listener = Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        MONGODB_URL, tz_aware=True, event_listeners=[listener]
    )
    try:
        store = AuditStore(client[audit.settings.database("audit")], chain_key=audit.service.keys.chain)
        await store.ensure_indexes()
        store.view_ready = True
        f = Filters(
            since=T0.replace(hour=0), until=T0.replace(hour=0) + timedelta(hours=12), office_id=OFFICE
        )
        listener.seen.clear()
        first = await store.search(f, 4)
        assert [d["_id"] for d in first] == ids[:4]
        touched = {name for _, name in listener.seen}
        assert touched == {"audit_day.kushiro-gyosei.20261201"}, touched  # not records, no other day
        listener.seen.clear()
        rest = await store.search(f, 4, cursor=str(first[-1]["_id"]))
        assert [d["_id"] for d in rest] == ids[4:]
        # the cursor's record is read by its _id; then the bucket again, nothing else
        assert {name for _, name in listener.seen} == {"records", "audit_day.kushiro-gyosei.20261201"}
    finally:
        await client.close()

    r = await audit.http.get(
        "/v1/audit/records", params={**DAY, "office_id": OFFICE, "limit": 5}, headers=auth()
    )
    assert [x["event_id"] for x in r.json()] == ids[:5] and r.headers["X-Next-Cursor"] == ids[4]
    r = await audit.http.get(
        "/v1/audit/records",
        params={**DAY, "office_id": OFFICE, "limit": 5, "cursor": r.headers["X-Next-Cursor"]},
        headers=auth(),
    )
    assert [x["event_id"] for x in r.json()] == ids[5:] and "X-Next-Cursor" not in r.headers
    bad = await audit.http.get(
        "/v1/audit/records", params={**DAY, "office_id": OFFICE, "cursor": "x"}, headers=auth()
    )
    assert bad.status_code == 400


async def test_a_month_export_and_statistics_come_from_the_offices_days(audit: Audit) -> None:
    await seed(audit)
    month = {"from": "2026-11-30T15:00:00+00:00", "to": "2026-12-31T15:00:00+00:00", "office_id": OFFICE}
    r = await audit.http.get("/v1/audit/export", params={**month, "format": "csv"}, headers=auth())
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [int(x["seq"]) for x in rows] == sorted(int(x["seq"]) for x in rows)  # chain order
    assert len(rows) == 7  # six on the 1st and one on the 3rd; not -3 days, +40 days or the other office
    for i in range(5):
        audit.clock.set(T0 + timedelta(hours=1, minutes=i))
        completed = BookingCompleted(
            booking_id=f"c-{i}",
            started_at=T0 + timedelta(hours=1),
            ended_at=T0 + timedelta(hours=1, minutes=20),
        )
        await audit.append(completed)
    stats = (await audit.http.get("/v1/audit/stats", params=month, headers=auth())).json()
    assert [(c["day"], c["hour"], c["count"]) for c in stats["cells"]] == [("2026-12-01", 11, 5)]


async def test_a_copy_edited_in_the_view_is_shown_as_the_chain_holds_it(
    audit: Audit, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    ids = await seed(audit)
    bucket = mongo[audit.settings.database("audit")]["audit_day.kushiro-gyosei.20261201"]
    await bucket.update_one({"_id": ids[2]}, {"$set": {"booking_id": "forged"}})
    r = await audit.http.get("/v1/audit/records", params={**DAY, "office_id": OFFICE}, headers=auth())
    shown = {x["event_id"]: x["booking_id"] for x in r.json()}
    assert shown[ids[2]] == "b-2"


async def test_records_chained_without_their_copy_are_found_after_a_start_without_a_clean_stop(
    make_settings: Callable[..., Any],
) -> None:
    async with running_audit(make_settings) as first:
        await eventually(lambda: _ready(first), what="the day view ready")
        event = first.event(requested("crashed"))
        entry = records.from_event(event, now=first.clock.now(), pseudonymise=first.service.pseudonymise)
        linked = chain.link(
            [entry.record], after_seq=0, prev_hash=chain.GENESIS, key=first.service.keys.chain
        )
        await first.service.store.insert_chained(linked)  # the chain insert, then "the crash"
        await first.service.store.set_view_state(running=True)
        first.service.store.view_ready = False  # what the process would leave: no clean stop
    async with running_audit(make_settings) as again:
        await eventually(lambda: _ready(again), what="the day view rebuilt")
        r = await again.http.get("/v1/audit/records", params={**DAY, "office_id": OFFICE}, headers=auth())
        assert [x["booking_id"] for x in r.json()] == ["crashed"]


async def test_a_redelivered_event_brings_back_its_missing_copy(
    audit: Audit, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    event = await audit.append(requested("again"))
    bucket = mongo[audit.settings.database("audit")]["audit_day.kushiro-gyosei.20261201"]
    await bucket.delete_one({"_id": str(event.event_id)})  # as if the process died before the copy
    svc = audit.service
    await svc.record(records.from_event(event, now=audit.clock.now(), pseudonymise=svc.pseudonymise))
    assert svc.appender.stats.duplicates == 1
    r = await audit.http.get("/v1/audit/records", params={**DAY, "office_id": OFFICE}, headers=auth())
    assert [x["event_id"] for x in r.json()] == [str(event.event_id)]
