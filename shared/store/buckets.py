"""Bucketed markers: a read a person or a handler waits for touches one bounded bucket, whatever the history.

FerretDB 1.x answers only `{_id: value}` from an index; any other filter decodes the whole
collection, so a listing by office and day gets slower with every booking the office ever took.
`Buckets` keeps, per kind of listing, one *bucket* per (scope, period): an office's day, a
counsellor's day, an office's month. A bucket holds insert-only markers `{_id: item id, **fields}`.

- On FerretDB every bucket is a collection of its own (`<kind>.<scope>.<period>`): reading it is a
  `find({})` that decodes that bucket only.
- On MongoDB the markers of a kind share one collection with a secondary index on `bucket`
  (`_id = "<bucket>|<item>"`), created by `ensure_indexes` at start-up.

A marker is written with a unique insert (a second insert of one item in one bucket is a no-op),
so concurrent writers need no isolation. Markers are a cache of where an item is, never the item:
an item that moves is added to its new bucket before it leaves the old one, and a reader loads the
item itself by `_id` and drops markers it no longer matches (a crash between the two writes leaves
a stale marker that the next read ignores, never a missing one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.clock import JST
from shared.mongo import Doc, inserted_despite_duplicates
from shared.store.backend import is_ferretdb

Period = Literal["day", "month"]
Layout = Literal["collections", "indexed"]
_SCOPE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def period_key(when: date | datetime, period: Period) -> str:
    """The bucket's period in Japan (office days are JST days): `20261204` or `202612`."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("an aware datetime is needed to find its JST day")
        when = when.astimezone(JST).date()
    return f"{when:%Y%m%d}" if period == "day" else f"{when:%Y%m}"


def periods(start: date, end: date, period: Period) -> Iterator[str]:
    """Every period key from `start` to `end` inclusive (JST dates)."""
    if period == "day":
        day = start
        while day <= end:
            yield period_key(day, "day")
            day += timedelta(days=1)
        return
    year, month = start.year, start.month
    while (year, month) <= (end.year, end.month):
        yield f"{year:04d}{month:02d}"
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


async def layout_for(db: AsyncDatabase[Doc]) -> Layout:
    """Collections per bucket on FerretDB, one indexed collection on MongoDB."""
    return "collections" if await is_ferretdb(db.client) else "indexed"


class Buckets:
    """Insert-only markers of one kind, bucketed by (scope, period)."""

    def __init__(self, db: AsyncDatabase[Doc], kind: str, *, period: Period, layout: Layout) -> None:
        if not _SCOPE.match(kind):
            raise ValueError(f"bucket kind {kind!r}: letters, digits, '_' and '-' only")
        self.db = db
        self.kind = kind
        self.period: Period = period
        self.layout: Layout = layout

    @classmethod
    async def open(cls, db: AsyncDatabase[Doc], kind: str, *, period: Period) -> Buckets:
        return cls(db, kind, period=period, layout=await layout_for(db))

    async def ensure_indexes(self) -> None:
        """MongoDB: the secondary index every read of this kind uses (`<kind>.bucket_1`)."""
        if self.layout == "indexed":
            await self.db[self.kind].create_index([("bucket", ASCENDING)], name="bucket_1")

    def bucket(self, scope: str, when: date | datetime | str) -> str:
        if not _SCOPE.match(scope):
            raise ValueError(f"bucket scope {scope!r}: letters, digits, '_' and '-' only")
        key = when if isinstance(when, str) else period_key(when, self.period)
        return f"{scope}.{key}"

    async def add(
        self, scope: str, when: date | datetime | str, item_id: str, fields: Doc | None = None
    ) -> bool:
        """Mark `item_id` in its bucket; False if it was marked there already (the first marker stays)."""
        bucket = self.bucket(scope, when)
        doc = {**(fields or {}), "_id": item_id}
        try:
            if self.layout == "collections":
                await self.db[f"{self.kind}.{bucket}"].insert_one(doc)
            else:
                await self.db[self.kind].insert_one({**doc, "_id": f"{bucket}|{item_id}", "bucket": bucket})
        except DuplicateKeyError:
            return False
        return True

    async def add_many(self, scope: str, when: date | datetime | str, items: Sequence[Doc]) -> int:
        """Mark many items of one bucket in one unordered insert (each item's `_id` is its id); an
        item marked there already keeps its first marker. Returns how many markers are new."""
        if not items:
            return 0
        bucket = self.bucket(scope, when)
        if self.layout == "collections":
            target, docs = self.db[f"{self.kind}.{bucket}"], list(items)
        else:
            target = self.db[self.kind]
            docs = [{**d, "_id": f"{bucket}|{d['_id']}", "bucket": bucket} for d in items]
        try:
            return len((await target.insert_many(docs, ordered=False)).inserted_ids)
        except BulkWriteError as exc:
            return inserted_despite_duplicates(exc)

    async def remove(self, scope: str, when: date | datetime | str, item_id: str) -> None:
        bucket = self.bucket(scope, when)
        if self.layout == "collections":
            await self.db[f"{self.kind}.{bucket}"].delete_one({"_id": item_id})
        else:
            await self.db[self.kind].delete_one({"_id": f"{bucket}|{item_id}"})

    async def read(self, scope: str, when: date | datetime | str, projection: Doc | None = None) -> list[Doc]:
        """Every marker of one bucket (`_id` = the item id), in no particular order."""
        bucket = self.bucket(scope, when)
        if self.layout == "collections":
            return await self.db[f"{self.kind}.{bucket}"].find({}, projection).to_list()
        docs = await self.db[self.kind].find({"bucket": bucket}, projection).to_list()
        return [_item(d) for d in docs]

    async def read_span(self, scope: str, start: date, end: date, projection: Doc | None = None) -> list[Doc]:
        """The markers of every bucket from `start` to `end` (JST dates, inclusive), bucket by bucket."""
        out: list[Doc] = []
        for key in periods(start, end, self.period):
            out.extend(await self.read(scope, key, projection))
        return out

    async def drop(self, scope: str, when: date | datetime | str) -> int:
        """Remove a whole bucket (retention); the number of markers it held."""
        bucket = self.bucket(scope, when)
        if self.layout == "collections":
            name = f"{self.kind}.{bucket}"
            count = await self.db[name].count_documents({})
            await self.db.drop_collection(name)
            return count
        result = await self.db[self.kind].delete_many({"bucket": bucket})
        return result.deleted_count


def _item(doc: Doc) -> Doc:
    out: dict[str, Any] = {k: v for k, v in doc.items() if k != "bucket"}
    out["_id"] = str(doc["_id"]).split("|", 1)[1]
    return out
