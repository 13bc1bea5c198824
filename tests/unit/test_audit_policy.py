"""Statistics suppression, four-eyes disclosure, batching and cursors, without servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions

from services.audit import records, view
from services.audit.auth import APPROVER, AUDITOR, Caller
from services.audit.disclosure import DisclosureIn, Refused, Scope, check_open, decide, new_request
from services.audit.export import chain_ordered, csv_chunks
from services.audit.ingest import Batcher
from services.audit.search import Filters, after, encode_cursor
from services.audit.stats import Tally

NOW = datetime(2026, 12, 1, 3, tzinfo=UTC)
ALICE = Caller("ak-alice", "Alice", frozenset({AUDITOR}))
BOB = Caller("ak-bob", "Bob", frozenset({APPROVER}))
CAROL = Caller("ak-carol", "Carol", frozenset({AUDITOR, APPROVER}))
REQUEST = DisclosureIn(
    legal_basis="刑事訴訟法第197条第2項",
    authority="北海道警察釧路方面本部",
    reference_number="釧方刑第123号",
    scope=Scope(device_key="abc"),
)


def test_r11_stats_suppress_cells_below_the_threshold() -> None:
    tally = Tally()
    for _ in range(5):
        tally.add({"office_id": "kg", "day": "2026-12-01", "hour": 10, "usage_minutes": 30})
    for _ in range(4):
        tally.add({"office_id": "kg", "day": "2026-12-01", "hour": 11, "usage_minutes": 20})
    cells = tally.publish(threshold=5)
    assert cells[0] == {
        "office_id": "kg",
        "day": "2026-12-01",
        "hour": 10,
        "count": 5,
        "minutes": 150.0,
        "suppressed": False,
    }
    assert cells[1]["suppressed"] and cells[1]["count"] is None and cells[1]["minutes"] is None


def test_r11_an_auditor_cannot_approve_their_own_disclosure() -> None:
    doc = new_request(REQUEST, CAROL, NOW)
    with pytest.raises(Refused, match="four eyes"):
        decide(doc, CAROL, approve=True, now=NOW)


def test_r11_four_eyes_compares_people_not_keys() -> None:
    """A second key of the requester (or the console acting for them) is still the requester: 409,
    R11. Another person decides, and the decision names the person and the key."""
    hanako = Caller("ak-hanako-1", "監査 花子", frozenset({AUDITOR}), who="kansa.hanako")
    doc = new_request(REQUEST, hanako, NOW)
    assert doc["requested_by"] == "ak-hanako-1" and doc["requested_by_person"] == "kansa.hanako"
    her_other_key = Caller("ak-hanako-2", "監査 花子", frozenset({APPROVER}), who="kansa.hanako")
    console_for_her = Caller("ak-console", "コンソール", frozenset({APPROVER}), who="kansa.hanako")
    for key in (her_other_key, console_for_her):
        with pytest.raises(Refused, match="four eyes") as refused:
            decide(doc, key, approve=True, now=NOW)
        assert (refused.value.status_code, refused.value.rule) == (409, "R11")
    console_for_taro = Caller("ak-console", "コンソール", frozenset({APPROVER}), who="shonin.taro")
    changes = decide(doc, console_for_taro, approve=True, now=NOW)
    assert (changes["decided_by"], changes["decided_by_person"]) == ("ak-console", "shonin.taro")
    approved = {**doc, **changes}
    check_open(
        approved, Caller("ak-hanako-3", "監査 花子", frozenset({AUDITOR}), who="kansa.hanako"), NOW, 30
    )
    with pytest.raises(Refused, match="requester or the approver"):
        check_open(approved, Caller("ak-console", "コンソール", frozenset({AUDITOR}), who="other"), NOW, 30)


def test_r11_a_request_stored_before_persons_is_its_keys_own_person() -> None:
    doc = new_request(REQUEST, BOB, NOW)
    del doc["requested_by_person"]
    with pytest.raises(Refused, match="four eyes"):
        decide(doc, Caller("ak-bob", "Bob", frozenset({APPROVER})), approve=True, now=NOW)
    assert decide(doc, CAROL, approve=True, now=NOW)["decided_by_person"] == "ak-carol"


def test_r11_only_a_disclosure_approver_decides() -> None:
    doc = new_request(REQUEST, CAROL, NOW)
    with pytest.raises(Refused, match="disclosure-approver"):
        decide(doc, ALICE, approve=True, now=NOW)
    changes = decide(doc, BOB, approve=True, now=NOW)
    assert changes["status"] == "approved" and changes["decided_by"] == "ak-bob"
    with pytest.raises(Refused, match="already approved"):
        decide({**doc, **changes}, BOB, approve=False, now=NOW)


def test_r11_an_approval_opens_for_requester_and_approver_only_and_expires() -> None:
    doc = {
        **new_request(REQUEST, ALICE, NOW),
        **decide(new_request(REQUEST, ALICE, NOW), BOB, approve=True, now=NOW),
    }
    check_open(doc, ALICE, NOW, 30)
    check_open(doc, BOB, NOW, 30)
    with pytest.raises(Refused, match="requester or the approver"):
        check_open(doc, CAROL, NOW, 30)
    with pytest.raises(Refused, match="expired"):
        check_open(doc, ALICE, NOW + timedelta(days=31), 30)


def test_r11_a_disclosure_needs_a_narrow_scope() -> None:
    with pytest.raises(ValueError, match="never a bulk export"):
        Scope(office_id="kushiro-gyosei")


async def test_batcher_groups_submissions_made_while_a_flush_runs() -> None:
    sizes: list[int] = []

    async def sink(batch: list[records.Entry]) -> None:
        sizes.append(len(batch))
        await asyncio.sleep(0.01)

    batcher = Batcher(sink, max_size=50, linger=0)
    batcher.start()
    entries = [records.internal("t", actor="a", details={}, now=NOW) for _ in range(120)]
    await asyncio.gather(*(batcher.submit(e) for e in entries))
    await batcher.stop()
    assert sum(sizes) == 120 and max(sizes) == 50 and len(sizes) < 10


async def test_batcher_hands_a_failed_write_to_every_waiter() -> None:
    async def sink(batch: list[records.Entry]) -> None:
        raise ConnectionError("database gone")

    batcher = Batcher(sink)
    batcher.start()
    results = await asyncio.gather(
        *(batcher.submit(records.internal("t", actor="a", details={}, now=NOW)) for _ in range(3)),
        return_exceptions=True,
    )
    await batcher.stop()
    assert all(isinstance(r, ConnectionError) for r in results)


def test_cursor_is_the_last_records_id_and_the_next_page_starts_after_it() -> None:
    last = {"_id": "e9", "occurred_at": NOW}
    assert encode_cursor(last) == "e9"
    q = after(Filters(office_id="kg").query(), (NOW, "e9"))
    assert q["$and"][0] == {"office_id": "kg"}
    assert q["$and"][1]["$or"][1] == {"occurred_at": NOW, "_id": {"$gt": "e9"}}
    assert after({"type": "t"}, None) == {"type": "t"}


def test_filters_decide_in_python_what_their_query_selects() -> None:
    f = Filters(since=NOW, until=NOW + timedelta(hours=1), office_id="kg", type="t", sealed=True)
    assert f.query() == {
        "office_id": "kg",
        "type": "t",
        "sealed": True,
        "occurred_at": {"$gte": NOW, "$lt": NOW + timedelta(hours=1)},
    }
    row = {"office_id": "kg", "type": "t", "sealed": True, "occurred_at": NOW}
    assert f.matches(row)
    assert not f.matches({**row, "sealed": False})
    assert not f.matches({**row, "type": "u"})
    assert not f.matches({**row, "occurred_at": NOW + timedelta(hours=1)})  # the upper bound is open
    assert not f.matches({k: v for k, v in row.items() if k != "occurred_at"})
    assert Filters(type="t").matches({"type": "t"})


def test_only_an_offices_bounded_period_is_read_from_the_day_view() -> None:
    day = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)  # 00:00 JST on the 4th
    assert Filters(since=day, until=day + timedelta(days=1), office_id="kg").bounded_days() == 1
    assert (
        Filters(
            since=day - timedelta(seconds=1), until=day + timedelta(days=1), office_id="kg"
        ).bounded_days()
        == 2
    )
    assert Filters(since=day, until=day + timedelta(days=1)).bounded_days() is None
    assert Filters(since=day, office_id="kg").bounded_days() is None
    assert [d.isoformat() for d in view.days(day, day + timedelta(days=2))] == ["2026-12-04", "2026-12-05"]
    assert view.days(day, day) == []
    assert view.scope_of("kushiro-gyosei") == "kushiro-gyosei"
    assert view.scope_of("_audit") == "_audit"
    odd = view.scope_of("釧路.office")
    assert odd.startswith("h-") and odd == view.scope_of("釧路.office") != view.scope_of("釧路.other")


async def test_an_export_that_fails_midway_says_so() -> None:
    async def rows() -> AsyncIterator[dict[str, object]]:
        yield {"_id": "e1", "event_id": "e1", "type": "t", "occurred_at": NOW, "payload": {}}
        raise ConnectionError("database gone")

    chunks: list[bytes] = []
    with pytest.raises(ConnectionError):
        async for chunk in csv_chunks(rows()):
            chunks.append(chunk)
    text = b"".join(chunks).decode("utf-8-sig")
    assert text.splitlines()[1].startswith("e1,t,")
    assert text.splitlines()[-1] == "# EXPORT INCOMPLETE after 1 rows: ConnectionError"


async def rows_of(docs: list[dict[str, object]]) -> AsyncIterator[dict[str, object]]:
    for d in docs:
        yield d


async def test_an_export_read_in_store_order_comes_out_in_chain_order_and_unchanged() -> None:
    """FerretDB's unsorted read: streams interleaved, one of them (hw) out of seq order."""
    arrived = [("kg", 1), ("_audit", 1), ("kg", 2), ("hw", 2), ("hw", 1), ("_audit", 2), ("kg", 3)]
    docs: list[dict[str, object]] = [
        {"_id": f"{s}-{n}", "stream": s, "seq": n, "occurred_at": NOW + timedelta(milliseconds=n),
         "payload": {"booking_id": f"b-{n}", "windows": [NOW]}, "correlation_id": UUID(int=n), "note": None}
        for s, n in arrived
    ]  # fmt: skip
    codec: CodecOptions[dict[str, object]] = CodecOptions(
        tz_aware=True, uuid_representation=UuidRepresentation.STANDARD
    )  # as shared.mongo.connect reads them
    out = [d async for d in chain_ordered(rows_of(docs), codec)]
    assert [(d["stream"], d["seq"]) for d in out] == sorted(arrived)
    assert sorted(out, key=lambda d: str(d["_id"])) == sorted(docs, key=lambda d: str(d["_id"]))
    assert [d async for d in chain_ordered(rows_of([]), codec)] == []
