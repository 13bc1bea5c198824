"""shared.store.buckets on the real server, in both layouts (FerretDB runs either; MongoDB uses `indexed`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.store.buckets import Buckets, layout_for, period_key, periods


@pytest.mark.parametrize("layout", ["collections", "indexed"])
async def test_markers_are_read_per_bucket_unique_per_item_and_removable(
    mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str, layout: Any
) -> None:
    db = mongo[f"{db_prefix}buckets"]
    days = Buckets(db, "day_index", period="day", layout=layout)
    await days.ensure_indexes()
    # 23:30 UTC on the 3rd is 08:30 JST on the 4th: the bucket is the office's (JST) day
    late = datetime(2026, 12, 3, 23, 30, tzinfo=UTC)
    assert await days.add("kushiro", late, "b1", {"start": late})
    assert not await days.add("kushiro", late, "b1", {"start": late}), "a second marker of one item"
    results = await asyncio.gather(*(days.add("kushiro", date(2026, 12, 4), f"c{i}") for i in range(20)))
    assert all(results)
    assert await days.add("kohoku", date(2026, 12, 4), "k1")
    assert await days.add("kushiro", date(2026, 12, 5), "b2")

    got = await days.read("kushiro", date(2026, 12, 4))
    assert sorted(d["_id"] for d in got) == sorted(["b1", *(f"c{i}" for i in range(20))])
    assert next(d for d in got if d["_id"] == "b1")["start"] == late
    assert [d["_id"] for d in await days.read("kohoku", "20261204")] == ["k1"]
    span = await days.read_span("kushiro", date(2026, 12, 3), date(2026, 12, 5))
    assert len(span) == 22

    many = [{"_id": "b1"}, *({"_id": f"m{i}", "n": i} for i in range(5))]
    assert await days.add_many("kushiro", date(2026, 12, 6), many) == 6
    assert await days.add_many("kushiro", date(2026, 12, 6), [{"_id": "m0"}, {"_id": "m9"}]) == 1
    assert len(await days.read("kushiro", date(2026, 12, 6))) == 7
    assert await days.add_many("kushiro", date(2026, 12, 6), []) == 0

    await days.remove("kushiro", date(2026, 12, 4), "b1")
    assert "b1" not in {d["_id"] for d in await days.read("kushiro", date(2026, 12, 4))}
    assert await days.drop("kushiro", date(2026, 12, 4)) == 20
    assert await days.read("kushiro", date(2026, 12, 4)) == []


@pytest.mark.parametrize("layout", ["collections", "indexed"])
async def test_many_markers_go_in_at_once_and_those_present_keep_their_first_marker(
    mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str, layout: Any
) -> None:
    db = mongo[f"{db_prefix}buckets"]
    days = Buckets(db, "many", period="day", layout=layout)
    await days.ensure_indexes()
    assert await days.add_many("kushiro", date(2026, 12, 4), []) == 0
    assert await days.add("kushiro", date(2026, 12, 4), "a2", {"n": 0})
    added = await days.add_many("kushiro", date(2026, 12, 4), [{"_id": f"a{i}", "n": i} for i in range(5)])
    assert added == 4
    got = {d["_id"]: d["n"] for d in await days.read("kushiro", date(2026, 12, 4))}
    assert got == {"a0": 0, "a1": 1, "a2": 0, "a3": 3, "a4": 4}
    assert await days.read("kushiro", date(2026, 12, 5)) == []


async def test_the_layout_follows_the_server(mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str) -> None:
    info = await mongo.admin.command("buildInfo")
    expected = "collections" if "ferretdbVersion" in info else "indexed"
    assert await layout_for(mongo[f"{db_prefix}buckets"]) == expected
    opened = await Buckets.open(mongo[f"{db_prefix}buckets"], "x", period="month")
    assert opened.layout == expected


def test_period_keys_are_jst_and_spans_cover_month_ends() -> None:
    assert period_key(datetime(2026, 12, 31, 15, 0, tzinfo=UTC), "day") == "20270101"
    assert period_key(datetime(2026, 12, 31, 15, 0, tzinfo=UTC), "month") == "202701"
    months = ["202611", "202612", "202701", "202702"]
    assert list(periods(date(2026, 11, 30), date(2027, 2, 1), "month")) == months
    assert list(periods(date(2026, 2, 27), date(2026, 3, 1), "day")) == ["20260227", "20260228", "20260301"]
    with pytest.raises(ValueError, match="aware"):
        period_key(datetime(2026, 12, 4, 10, 0), "day")
    with pytest.raises(ValueError, match="scope"):
        Buckets.__new__(Buckets).bucket("../x", "20261204")
