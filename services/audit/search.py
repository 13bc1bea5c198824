"""Auditor search: filters to a query, cursor pagination, and the public shape of a record."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.clock import jst
from shared.mongo import Doc

#: columns of the CSV export, in order; `payload` is the redacted payload as JSON
COLUMNS = (
    "event_id",
    "type",
    "kind",
    "office_id",
    "stream",
    "seq",
    "occurred_at",
    "recorded_at",
    "producer",
    "booking_id",
    "actor",
    "device_key",
    "ip_key",
    "ua_key",
    "email_key",
    "usage_start",
    "usage_end",
    "usage_start_jst",
    "usage_end_jst",
    "usage_minutes",
    "usage_from",
    "correlation_id",
    "causation_id",
    "prev_hash",
    "hash",
    "payload",
)


#: times also shown in JST (the usage window, R10)
SHOWN_IN_JST = ("usage_start", "usage_end")


#: the equality filters, in the order `query()` writes them
EQUAL = ("office_id", "booking_id", "type", "kind", "actor", "device_key", "ip_key", "email_key", "sealed")


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class Filters:
    """Search criteria; every field optional; times are occurred_at bounds [since, until)."""

    since: datetime | None = None
    until: datetime | None = None
    office_id: str | None = None
    booking_id: str | None = None
    type: str | None = None
    kind: str | None = None
    actor: str | None = None
    device_key: str | None = None
    ip_key: str | None = None
    email_key: str | None = None
    sealed: bool | None = None

    def _equal(self) -> Doc:
        return {f: getattr(self, f) for f in EQUAL if getattr(self, f) is not None}

    def query(self) -> Doc:
        q = self._equal()
        span: Doc = {}
        if self.since is not None:
            span["$gte"] = self.since.astimezone(UTC)
        if self.until is not None:
            span["$lt"] = self.until.astimezone(UTC)
        if span:
            q["occurred_at"] = span
        return q

    def matches(self, record: Doc) -> bool:
        """What `query()` selects, decided in Python (the day view filters its buckets so)."""
        if any(record.get(k) != v for k, v in self._equal().items()):
            return False
        if self.since is None and self.until is None:
            return True
        at = record.get("occurred_at")
        if not isinstance(at, datetime):
            return False
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)

    def bounded_days(self) -> int | None:
        """How many JST days an office's search spans, when it names the office and both bounds."""
        if self.office_id is None or self.since is None or self.until is None:
            return None
        start = jst(self.since).date()
        end = jst(max(self.since, self.until - timedelta(milliseconds=1))).date()
        return (end - start).days + 1


def encode_cursor(record: Doc) -> str:
    """The next page starts after this record: its id is the cursor (read back by `_id`)."""
    return str(record["_id"])


def after(query: Doc, position: tuple[datetime, str] | None) -> Doc:
    """The query restricted to records after `position` (the cursor's record) in (occurred_at, _id) order."""
    if position is None:
        return query
    at, rid = position
    page = {"$or": [{"occurred_at": {"$gt": at}}, {"occurred_at": at, "_id": {"$gt": rid}}]}
    return {"$and": [query, page]} if query else page


def public(record: Doc) -> Doc:
    """JSON-ready record: ISO times in UTC as stored, the usage window in JST beside them, no
    internal _id (it is the event id)."""
    out = {
        k: (v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v)
        for k, v in record.items()
        if k != "_id"
    }
    for field in SHOWN_IN_JST:
        if isinstance(record.get(field), datetime):
            out[f"{field}_jst"] = jst(record[field]).isoformat()
    return out


def csv_row(record: Doc) -> list[Any]:
    out = public(record)
    out["payload"] = json.dumps(out.get("payload", {}), ensure_ascii=False, sort_keys=True)
    return [out.get(c, "") for c in COLUMNS]


def json_lines(records: Iterable[Doc]) -> Iterator[str]:
    for r in records:
        yield json.dumps(public(r), ensure_ascii=False)
