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
- `timer_due` (shared/store/buckets.py): a marker `{_id: timer id, due_at}` per pending timer in the
  bucket of its JST day (the later of its due day and the day it was armed, so a timer armed late
  lands in a day a reader still looks at), written before the feed entry and removed once the timer
  is resolved. A take-over reads the buckets from the watermark (`timer_state/watermark`: the
  earliest day that may still hold a pending marker) to the end of the horizon, not every pending
  timer; the wheel loads each later day's bucket when the horizon reaches it. A marker whose timer
  is resolved or missing (a crash between two writes) is dropped by whoever reads it by `_id`.
  Timers written before the markers existed get theirs from `backfill` (the first take-over runs it,
  with the old full read, and records `timer_state/markers`; `consultctl scheduler backfill` too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.scheduler.timing import TimerKind, TimerSpec, timer_id
from shared.clock import JST
from shared.events import Envelope
from shared.mongo import Doc
from shared.store import outbox
from shared.store.buckets import Buckets, period_key

PENDING, FIRED, CANCELLED = "pending", "fired", "cancelled"
#: a booking's timers may be one version ahead of its request: two writers of one request can both
#: pass on FerretDB (last write wins), the loser's timers armed at the version it computed
VERSION_SLACK = 1
#: the due markers' one scope: one wheel runs every office's timers
WHEEL = "wheel"
MARKERS_DONE, WATERMARK = "markers", "watermark"


def due_day(due_at: datetime, armed_at: datetime | None) -> date:
    """The JST day of a timer's due marker: its due day, or the day it was armed if that is later."""
    when = due_at if armed_at is None else max(due_at, armed_at)
    return when.astimezone(JST).date()


def day_key(day: date) -> str:
    return period_key(day, "day")


class TimerStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["timers"]
        self.outcomes = db["timer_outcomes"]
        self.feed = db["timer_feed"]  # timers armed since the leader last looked (small)
        self.effects = db["timer_effects"]  # hold firings whose after-effects are not done (small)
        self.state = db["timer_state"]  # the due markers' watermark and backfill flag (two documents)
        self.db = db
        self._due: Buckets | None = None
        self._markers_done = False
        self.on_write: Callable[[Any], None] = lambda doc_id: None  # wakes the outcomes' outbox relay
        self.on_arm: Callable[[Doc], None] = lambda doc: None  # tells the wheel

    async def due_buckets(self) -> Buckets:
        if self._due is None:
            self._due = await Buckets.open(self.db, "timer_due", period="day")
        return self._due

    async def arm(self, spec: TimerSpec, *, correlation_id: str, now: datetime) -> None:
        """Create the timer unless it exists (idempotent: the id is derived from booking, kind, version).

        The due marker and the feed entry come first: a crash between them and the timer leaves an
        entry without its timer, which the leader drops after a grace period (and a marker the reader
        drops); the other order could leave a timer nobody arms."""
        day = due_day(spec.due_at, now)
        await (await self.due_buckets()).add(WHEEL, day, spec.timer_id, {"due_at": spec.due_at})
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
        self,
        timer_id: str,
        *,
        now: datetime,
        by: str,
        lateness: float,
        event: Envelope[Any],
        timer: Doc | None = None,
    ) -> bool:
        """Resolve as fired with its event; False if it was already fired or cancelled. `timer` (the
        document, if the caller has it) names its due marker's day."""
        fields = {
            "fired_at": now,
            "fired_by": by,
            "lateness_seconds": lateness,
            "event_id": str(event.event_id),
        }
        won = await self._resolve(timer_id, FIRED, fields, [event], timer)
        if won:
            self.on_write(timer_id)
        return won

    async def cancel_one(
        self, timer_id: str, *, reason: str, now: datetime, timer: Doc | None = None
    ) -> bool:
        """Resolve as cancelled; False if it had already fired or been cancelled."""
        fields = {"cancelled_at": now, "cancel_reason": reason}
        return await self._resolve(timer_id, CANCELLED, fields, [], timer)

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
        found = await asyncio.gather(*(self.brief(i) for i in ids))
        pending = [d for d in found if d is not None and d["status"] == PENDING]
        return sum([await self.cancel_one(d["_id"], reason=reason, now=now, timer=d) for d in pending])

    async def _resolve(
        self, timer_id: str, outcome: str, fields: Doc, events: list[Envelope[Any]], timer: Doc | None
    ) -> bool:
        try:
            await outbox.announce(self.outcomes, timer_id, events)
            await self.outcomes.insert_one(
                {"_id": timer_id, "outcome": outcome, **fields, **outbox.new_document_fields(events)}
            )
        except DuplicateKeyError:  # resolved already (fired or cancelled, by this replica or another)
            await outbox.withdraw(self.outcomes, timer_id, events)
            return False
        await self._unmark(timer_id, timer)
        return True

    async def _unmark(self, timer_id: str, timer: Doc | None) -> None:
        """Resolved: its due marker goes (a crash before this leaves one that readers drop)."""
        if timer is None or "due_at" not in timer:
            timer = await self.collection.find_one({"_id": timer_id}, {"due_at": 1, "armed_at": 1})
        if timer is not None:
            day = due_day(timer["due_at"], timer.get("armed_at"))
            await (await self.due_buckets()).remove(WHEEL, day, timer_id)

    async def get(self, timer_id: str) -> Doc | None:
        """The timer with its outcome, if it has one (two `_id` lookups)."""
        doc = await self.collection.find_one({"_id": timer_id})
        if doc is None:
            return None
        outcome = await self.outcomes.find_one({"_id": timer_id}, _OUTCOME_FIELDS)
        return _with_outcome(doc, outcome)

    async def pending(self) -> list[Doc]:
        """Every pending timer's id, due time and arming time: full scans, for the backfill only."""
        # one resolved between the two reads shows as pending: its firing reads it by `_id` anyway
        resolved = {d["_id"] async for d in self.outcomes.find({}, {"_id": 1})}
        cursor = self.collection.find({"status": PENDING}, {"_id": 1, "due_at": 1, "armed_at": 1})
        return [d async for d in cursor if d["_id"] not in resolved]

    async def brief(self, timer_id: str) -> Doc | None:
        """Status and due time of one timer, by `_id` (None if it does not exist)."""
        doc = await self.collection.find_one({"_id": timer_id}, {"status": 1, "due_at": 1, "armed_at": 1})
        if doc is None:
            return None
        outcome = await self.outcomes.find_one({"_id": timer_id}, {"outcome": 1})
        return _with_outcome(doc, outcome)

    # ----------------------------------------------------------------- due markers

    async def markers_ready(self) -> bool:
        """Whether every pending timer has its due marker (the backfill has run once)."""
        if not self._markers_done:
            self._markers_done = await self.state.find_one({"_id": MARKERS_DONE}) is not None
        return self._markers_done

    async def backfill(self, now: datetime) -> list[tuple[str, datetime]]:
        """Due markers for the pending timers written before they existed (idempotent): one full
        read of the pending timers, which it returns; then `markers_ready`."""
        pending = await self.pending()
        by_day: dict[date, list[Doc]] = {}
        for d in pending:
            marker = {"_id": d["_id"], "due_at": d["due_at"]}
            by_day.setdefault(due_day(d["due_at"], d.get("armed_at")), []).append(marker)
        buckets = await self.due_buckets()
        for day, markers in by_day.items():
            for k in range(0, len(markers), 1000):
                await buckets.add_many(WHEEL, day, markers[k : k + 1000])
        first = min([*by_day, now.astimezone(JST).date()])
        with contextlib.suppress(DuplicateKeyError):  # set once; later moves are the leader's
            await self.state.insert_one({"_id": WATERMARK, "day": day_key(first)})
        with contextlib.suppress(DuplicateKeyError):
            await self.state.insert_one({"_id": MARKERS_DONE, "at": now, "timers": len(pending)})
        self._markers_done = True
        return [(d["_id"], d["due_at"]) for d in pending]

    async def watermark(self, today: date) -> date:
        """The earliest JST day whose bucket may still hold a pending timer's marker."""
        doc = await self.state.find_one({"_id": WATERMARK})
        if doc is None:
            return today - timedelta(days=1)
        return datetime.strptime(doc["day"], "%Y%m%d").date()

    async def set_watermark(self, day: date) -> None:
        """Only the lease holder moves it (one writer)."""
        await self.state.update_one({"_id": WATERMARK}, {"$set": {"day": day_key(day)}}, upsert=True)

    async def due_in(self, first: date, last: date) -> list[tuple[str, datetime]]:
        """The marked timers of the JST days `first`..`last`: the timers due then, and those armed
        then already late (one bucket a day, each decoding only its own markers)."""
        if last < first:
            return []
        markers = await (await self.due_buckets()).read_span(WHEEL, first, last)
        return [(m["_id"], m["due_at"]) for m in markers]

    async def mark_fed(self, entry: Doc) -> None:
        """The marker of a feed entry the wheel does not read yet (idempotent: the writer made it
        already, unless it predates the markers)."""
        day = due_day(entry["due_at"], entry.get("at"))
        await (await self.due_buckets()).add(WHEEL, day, entry["_id"], {"due_at": entry["due_at"]})

    async def settle_day(self, day: date) -> int:
        """A past day's bucket: drop the markers of resolved or missing timers (by `_id`), and the
        bucket once empty; returns how many of its timers are still pending."""
        buckets = await self.due_buckets()
        left = 0
        for marker in await buckets.read(WHEEL, day_key(day), {"_id": 1}):
            doc = await self.brief(marker["_id"])
            if doc is not None and doc["status"] == PENDING:
                left += 1
            else:
                await buckets.remove(WHEEL, day_key(day), marker["_id"])
        if not left:
            await buckets.drop(WHEEL, day_key(day))
        return left

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
