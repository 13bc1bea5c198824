"""Durable timers: MongoDB is the source of truth; APScheduler only arms what it holds.

`timers` holds each timer (kind, due time), written once and never updated. A timer is *resolved* —
fired or cancelled — by inserting its outcome into `timer_outcomes` under the timer's own id. The
unique `_id` lets exactly one resolution through, however many replicas, retries or restarts try:
FerretDB applies concurrent conditional updates as read-then-write (several writers "win"), but it
never lets two inserts share an `_id`. A firing's event rides in the outcome document's outbox, so
the event exists once and is published by the relay of that collection. Lateness (firing time minus
due time) is recorded on the outcome and the event. Reads (`get`, `find`) show a timer with its
outcome's fields and status (`pending` while it has none). The timer's own `status` field keeps the
`pending` it was written with: on FerretDB 1.x an update even by `_id` rewrites the whole document
under the database's write lock, unisolated, at a cost that grew with the collection
(docs/performance.md, finding 13), so the outcome is no longer copied onto the timer (documents from
before that may carry it: `fired` or `cancelled` there is true as well).

FerretDB 1.x answers only an `{_id: value}` filter from an index; any other filter decodes every
document of the collection, a cost that grows with the number of timers (finding 6). So what runs
per tick or per message reads by `_id` or reads a small collection:
- `timer_feed`: a timer announces itself there (insert-only, before its own insert, like
  `outbox.announce`); the leading wheel reads the feed each tick and deletes what it merged. Only a
  take-over reads all pending timers (`pending`).
- `cancel` enumerates the booking's candidate timer ids (they are deterministic: booking, kind,
  version) instead of querying by booking.
- `timer_effects`: one marker per hold firing until its after-effects are done (R05), so the sweep
  reads the markers, not the timers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.scheduler.timing import TimerKind, TimerSpec, timer_id
from shared.events import Envelope
from shared.mongo import Doc
from shared.store import outbox

PENDING, FIRED, CANCELLED = "pending", "fired", "cancelled"
#: a booking's timers may be one version ahead of its request: two writers of one request can both
#: pass on FerretDB (last write wins), the loser's timers armed at the version it computed
VERSION_SLACK = 1


class TimerStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["timers"]
        self.outcomes = db["timer_outcomes"]
        self.feed = db["timer_feed"]  # timers armed since the leader last looked (small)
        self.effects = db["timer_effects"]  # hold firings whose after-effects are not done (small)
        self.on_write: Callable[[Any], None] = lambda doc_id: None  # wakes the outcomes' outbox relay
        self.on_arm: Callable[[Doc], None] = lambda doc: None  # tells the wheel

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("status", 1), ("due_at", 1)])
        await self.collection.create_index("booking_id")

    async def arm(self, spec: TimerSpec, *, correlation_id: str, now: datetime) -> None:
        """Create the timer unless it exists (idempotent: the id is derived from booking, kind, version).

        The feed entry comes first: a crash between the two leaves an entry without its timer, which
        the leader drops after a grace period; the other order could leave a timer nobody arms."""
        with contextlib.suppress(DuplicateKeyError):  # a redelivery arming the same timer
            await self.feed.insert_one({"_id": spec.timer_id, "due_at": spec.due_at, "at": now})
        doc = {
            "_id": spec.timer_id,
            "kind": spec.kind.value,
            "booking_id": spec.booking_id,
            "office_id": spec.office_id,
            "version": spec.version,
            "due_at": spec.due_at,
            "data": spec.data,
            "correlation_id": correlation_id,
            "status": PENDING,
            "armed_at": now,
        }
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            return
        self.on_arm(doc)

    async def fire(
        self, timer_id: str, *, now: datetime, by: str, lateness: float, event: Envelope[Any]
    ) -> bool:
        """Resolve as fired with its event; False if it was already fired or cancelled."""
        fields = {
            "fired_at": now,
            "fired_by": by,
            "lateness_seconds": lateness,
            "event_id": str(event.event_id),
        }
        won = await self._resolve(timer_id, FIRED, fields, [event])
        if won:
            self.on_write(timer_id)
        return won

    async def cancel_one(self, timer_id: str, *, reason: str, now: datetime) -> bool:
        """Resolve as cancelled; False if it had already fired or been cancelled."""
        return await self._resolve(timer_id, CANCELLED, {"cancelled_at": now, "cancel_reason": reason}, [])

    async def cancel(
        self,
        booking_id: str,
        *,
        reason: str,
        now: datetime,
        version: int,
        kinds: Iterable[str] | None = None,
        below: int | None = None,
    ) -> int:
        """Disarm the booking's pending timers (of some kinds, or older than a version).

        `version` is the request's current version. Timer ids are deterministic, so the candidates
        (each kind, versions 1 to `below - 1` or to `version + VERSION_SLACK`) are looked up by `_id`
        rather than found by a query on `booking_id`, which FerretDB answers with a full scan."""
        top = below - 1 if below is not None else version + VERSION_SLACK
        chosen = list(kinds) if kinds else [k.value for k in TimerKind]
        ids = [timer_id(booking_id, kind, v) for v in range(1, top + 1) for kind in chosen]
        found = await asyncio.gather(*(self._pending_status(i) for i in ids))
        pending = [i for i, status in zip(ids, found, strict=True) if status == PENDING]
        return sum([await self.cancel_one(i, reason=reason, now=now) for i in pending])

    async def _pending_status(self, timer_id: str) -> str | None:
        """The timer's status by `_id` (None if it does not exist)."""
        doc = await self.brief(timer_id)
        return None if doc is None else str(doc["status"])

    async def _resolve(self, timer_id: str, outcome: str, fields: Doc, events: list[Envelope[Any]]) -> bool:
        try:
            await outbox.announce(self.outcomes, timer_id, events)
            await self.outcomes.insert_one(
                {"_id": timer_id, "outcome": outcome, **fields, **outbox.new_document_fields(events)}
            )
        except DuplicateKeyError:  # resolved already (fired or cancelled, by this replica or another)
            await outbox.withdraw(self.outcomes, timer_id, events)
            return False
        return True

    async def get(self, timer_id: str) -> Doc | None:
        """The timer with its outcome, if it has one (two `_id` lookups)."""
        doc = await self.collection.find_one({"_id": timer_id})
        if doc is None:
            return None
        outcome = await self.outcomes.find_one({"_id": timer_id}, _OUTCOME_FIELDS)
        return _with_outcome(doc, outcome)

    async def pending(self) -> list[tuple[str, datetime]]:
        """Every pending timer's id and due time: full scans, for a take-over only."""
        # one resolved between the two reads shows as pending: its firing reads it by `_id` anyway
        resolved = {d["_id"] async for d in self.outcomes.find({}, {"_id": 1})}
        cursor = self.collection.find({"status": PENDING}, {"_id": 1, "due_at": 1})
        return [(d["_id"], d["due_at"]) async for d in cursor if d["_id"] not in resolved]

    async def brief(self, timer_id: str) -> Doc | None:
        """Status and due time of one timer, by `_id` (None if it does not exist)."""
        doc = await self.collection.find_one({"_id": timer_id}, {"status": 1, "due_at": 1})
        if doc is None:
            return None
        outcome = await self.outcomes.find_one({"_id": timer_id}, {"outcome": 1})
        return _with_outcome(doc, outcome)

    async def feed_entries(self, limit: int = 5000) -> list[Doc]:
        """Timers announced since the leader last merged the feed (a small collection, read whole)."""
        return await self.feed.find({}).limit(limit).to_list()

    async def forget_feed(self, ids: list[str]) -> None:
        for k in range(0, len(ids), 500):
            await self.feed.delete_many({"_id": {"$in": ids[k : k + 500]}})

    async def effects_pending(self, timer: Doc, now: datetime) -> None:
        """Before firing a hold: its after-effects (R05) are owed until `effects_done`."""
        with contextlib.suppress(DuplicateKeyError):  # another replica fires it too, or a retry
            await self.effects.insert_one({"_id": timer["_id"], "at": now})

    async def fired_without_effects(self, now: datetime, grace_seconds: float = 300.0) -> list[Doc]:
        """Fired holds whose after-effects a crash interrupted (reads the small marker collection).

        A marker whose timer was cancelled, or that never saw its firing within the grace period
        (the firing crashed before resolving; the timer is still pending and fires again), goes."""
        out: list[Doc] = []
        for marker in await self.effects.find({}).limit(200).to_list():
            outcome = await self.outcomes.find_one({"_id": marker["_id"]}, {"outcome": 1})
            if outcome is None and (now - marker["at"]).total_seconds() < grace_seconds:
                continue  # being fired right now
            timer = await self.get(marker["_id"]) if outcome and outcome["outcome"] == FIRED else None
            if timer is None:
                await self.effects_done(marker["_id"])
            else:
                out.append(timer)
        return out

    async def effects_done(self, timer_id: str) -> None:
        await self.effects.delete_one({"_id": timer_id})

    async def forget_finished(self, before: datetime) -> int:
        """Housekeeping: resolved timers due before `before` whose events are out leave the hot
        collections (FerretDB scans them on every sweep; the events themselves are in the audit store)."""
        # outcomes first, then the relay's markers: an outcome is written after its marker, so one
        # listed here whose events are not out yet still has its marker in the second read
        resolved = await self.outcomes.find({}, {"_id": 1}).to_list()
        markers = await outbox.pending_markers(self.outcomes).find({}, {"doc": 1}).to_list()
        waiting = {m["doc"] for m in markers}
        ids = [d["_id"] for d in resolved if d["_id"] not in waiting]
        old = await self.collection.find(
            {"_id": {"$in": ids}, "due_at": {"$lt": before}}, {"_id": 1}
        ).to_list()
        gone = [d["_id"] for d in old]
        if gone:
            await self.collection.delete_many({"_id": {"$in": gone}})
            await self.outcomes.delete_many({"_id": {"$in": gone}})
        return len(gone)

    async def find(
        self,
        *,
        status: str | None = None,
        booking_id: str | None = None,
        office_id: str | None = None,
        limit: int = 200,
    ) -> list[Doc]:
        """Operator views (filtering scans: operator-driven, not per message)."""
        query: Doc = {}
        for key, value in (("booking_id", booking_id), ("office_id", office_id)):
            if value:
                query[key] = value
        if status in (FIRED, CANCELLED):
            chosen = await self.outcomes.find({"outcome": status}, {"_id": 1}).to_list()
            query["_id"] = {"$in": [d["_id"] for d in chosen]}
        elif status == PENDING:
            resolved = await self.outcomes.find({}, {"_id": 1}).to_list()
            query |= {"status": PENDING, "_id": {"$nin": [d["_id"] for d in resolved]}}
        docs = await self.collection.find(query).sort("due_at", 1).limit(limit).to_list()
        outcomes = await self.outcomes.find(
            {"_id": {"$in": [d["_id"] for d in docs]}}, _OUTCOME_FIELDS
        ).to_list()
        by_id = {o["_id"]: o for o in outcomes}
        return [_with_outcome(d, by_id.get(d["_id"])) for d in docs]


_OUTCOME_FIELDS = {"outbox": 0, "outbox_seq": 0, "outbox_sent": 0, "outbox_pending": 0}


def _with_outcome(doc: Doc, outcome: Doc | None) -> Doc:
    """The timer as readers see it: its outcome's fields and status (`pending` without one)."""
    if outcome is None:
        return {**doc, "status": doc.get("status", PENDING)}
    fields = {k: v for k, v in outcome.items() if k not in ("_id", "outcome")}
    return {**doc, **fields, "status": outcome["outcome"]}
