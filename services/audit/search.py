"""Auditor search: filters to a query, cursor pagination, and the public shape of a record."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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

    def query(self) -> Doc:
        q: Doc = {
            f: getattr(self, f)
            for f in ("office_id", "booking_id", "type", "kind", "actor", "device_key", "ip_key", "email_key")
            if getattr(self, f) is not None
        }
        span: Doc = {}
        if self.since is not None:
            span["$gte"] = self.since.astimezone(UTC)
        if self.until is not None:
            span["$lt"] = self.until.astimezone(UTC)
        if span:
            q["occurred_at"] = span
        return q


def encode_cursor(record: Doc) -> str:
    key = [record["occurred_at"].astimezone(UTC).isoformat(timespec="milliseconds"), record["_id"]]
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def after(query: Doc, cursor: str | None) -> Doc:
    """The query restricted to records after the cursor in (occurred_at, _id) order."""
    if not cursor:
        return query
    try:
        at_text, rid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        at = datetime.fromisoformat(at_text)
    except (ValueError, TypeError) as exc:
        raise BadCursor("not a cursor from this API") from exc
    page = {"$or": [{"occurred_at": {"$gt": at}}, {"occurred_at": at, "_id": {"$gt": str(rid)}}]}
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
