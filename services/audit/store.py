"""The only module of the audit service that talks to MongoDB.

Collections: `records` (queryable, pseudonymised, chained; append-only), `heads` (last seq and hash
per stream, a hint the writer repairs), `checkpoints` (where the retention job cut each stream),
`sealed` (raw device values, AES-GCM), `credentials` (hashed API keys), `disclosures` (legal requests),
`audit_day*` (the day view, `view.py`: a copy of each record in its office's JST day) and `views`
(whether the day view is complete). FerretDB scans a collection for any query but `{_id: value}`, so
the ingest path only inserts, and an office's search, export and statistics over a period read the
day view; other queries (no office, or no period) read `records`, which MongoDB's indexes serve.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import pymongo
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.audit.chain import GENESIS
from services.audit.export import chain_ordered
from services.audit.records import stream_of
from services.audit.search import BadCursor, Filters, after
from services.audit.view import KIND, DayView
from shared.mongo import DUPLICATE_KEY, Doc, inserted_despite_duplicates
from shared.store.backend import is_ferretdb
from shared.store.buckets import Buckets, layout_for
from shared.store.conditional import update_if

ORDER = [("occurred_at", ASCENDING), ("_id", ASCENDING)]
CHAIN_ORDER = [("stream", ASCENDING), ("seq", ASCENDING)]
#: MongoDB only (FerretDB would only insert slower): the reads of `records` that the day view does not
#: serve, each with the index it uses (services/audit/README.md, "Reads and indexes")
SEARCH_INDEXES = (
    ORDER,  # a search or statistic across offices, or without both bounds
    [("office_id", ASCENDING), ("occurred_at", ASCENDING)],  # an office's search without both bounds
    [("booking_id", ASCENDING), ("occurred_at", ASCENDING)],  # a booking's records; disclosure scopes
    [("device_key", ASCENDING), ("occurred_at", ASCENDING)],  # disclosure scope by device
    [("ip_key", ASCENDING), ("occurred_at", ASCENDING)],  # disclosure scope by address
    [("type", ASCENDING), ("occurred_at", ASCENDING)],  # statistics of one type across offices
    [("stream", ASCENDING), ("recorded_at", ASCENDING)],  # retention: the first record kept
    [("stream", ASCENDING), ("hash", ASCENDING)],  # verify: where a genuine record's predecessor is
)
VIEW_STATE = "audit_day"
REBUILD_DEADLINE_SECONDS = 3600.0  # a scan of the whole store: a batch job's deadline
CHUNK = 500
ORDERED_BATCH = 100  # FerretDB's own write batch: an ordered insert is ordered only within one


class AuditStore:
    def __init__(self, db: AsyncDatabase[Doc], *, chain_key: bytes = b"", view_max_days: int = 366) -> None:
        self.db = db
        self.records = db["records"]
        self.heads = db["heads"]
        self.checkpoints = db["checkpoints"]
        self.sealed = db["sealed"]
        self.credentials = db["credentials"]
        self.disclosures = db["disclosures"]
        self.views = db["views"]
        self.scans_only = False  # set by ensure_indexes: the server cannot stream a sorted result
        self.view = DayView(Buckets(db, KIND, period="day", layout="collections"), chain_key, self.record)
        self.view_ready = False  # set by the service once the view holds every record
        self.view_max_days = view_max_days

    async def ensure_indexes(self) -> None:
        # _id is the event id: the unique index that makes ingest idempotent
        await self.records.create_index(CHAIN_ORDER, unique=True, name="chain_position")
        # FerretDB's SQLite backend answers every query with a scan: search indexes would only slow
        # the inserts there. MongoDB gets them.
        self.scans_only = await is_ferretdb(self.db.client)
        self.view.buckets.layout = await layout_for(self.db)
        await self.view.buckets.ensure_indexes()
        if self.scans_only:
            return
        for keys in SEARCH_INDEXES:
            await self.records.create_index(keys)

    # ----------------------------------------------------------------- chain writes

    async def insert_sealed(self, docs: Sequence[Doc]) -> None:
        if not docs:
            return
        try:
            await self.sealed.insert_many(list(docs), ordered=False)
        except BulkWriteError as exc:
            inserted_despite_duplicates(exc)  # a redelivered event: its values are sealed already

    async def insert_chained(self, docs: Sequence[Doc]) -> tuple[int, int | None]:
        """Ordered, so nothing lands after a refused record: (how many went in, index refused or None).

        In inserts of at most ORDERED_BATCH, the next only once the one before went in whole:
        FerretDB 1.24 writes an insert in batches of 100 and, after a refusal, stops only the batch
        it is in, then writes the later batches; one refusal in a larger insert left a gap in the chain.
        """
        docs = list(docs)
        for start in range(0, len(docs), ORDERED_BATCH):
            try:
                await self.records.insert_many(docs[start : start + ORDERED_BATCH], ordered=True)
            except BulkWriteError as exc:
                first = exc.details["writeErrors"][0]
                if first.get("code") != DUPLICATE_KEY:
                    raise
                return start + int(exc.details["nInserted"]), start + int(first["index"])
        return len(docs), None

    async def record(self, record_id: str) -> Doc | None:
        return await self.records.find_one({"_id": record_id})

    async def head(self, stream: str) -> Doc | None:
        return await self.heads.find_one({"_id": stream})

    async def save_heads(self, heads: dict[str, tuple[int, str]]) -> None:
        """Move each stream's head forward only, never back over another writer's records.

        One conditional update per stream (no bulk upsert: FerretDB's reply to a colliding bulk
        upsert lacks fields PyMongo needs); the callers save heads at most about once a second.
        """
        for stream, (seq, hash_) in heads.items():
            moved = await update_if(
                self.heads, stream, {"seq": {"$lt": seq}}, {"$set": {"seq": seq, "hash": hash_}}
            )
            if not moved:
                with contextlib.suppress(DuplicateKeyError):  # exists already, further on
                    await self.heads.insert_one({"_id": stream, "seq": seq, "hash": hash_})

    async def tail(self, stream: str) -> tuple[int, str]:
        """The real end of a stream (a scan); used when the head hint turned out stale."""
        last = await self.records.find_one(
            {"stream": stream}, {"seq": 1, "hash": 1}, sort=[("seq", DESCENDING)]
        )
        if last is not None:
            return int(last["seq"]), str(last["hash"])
        mark = await self.checkpoint(stream) or await self.head(stream)
        return (int(mark["seq"]), str(mark["hash"])) if mark else (0, GENESIS)

    # ----------------------------------------------------------------- reads

    def _viewed(self, f: Filters) -> bool:
        span = f.bounded_days()
        return self.view_ready and span is not None and span <= self.view_max_days

    async def position(self, cursor: str | None) -> tuple[datetime, str] | None:
        """Where the page after `cursor` (a record id) starts: that record's (occurred_at, _id)."""
        if not cursor:
            return None
        doc = await self.records.find_one({"_id": cursor[:100]}, {"occurred_at": 1})
        if doc is None:
            raise BadCursor("not a cursor from this API")
        return doc["occurred_at"], str(doc["_id"])

    async def search(self, f: Filters, limit: int, cursor: str | None = None) -> list[Doc]:
        """A page in (occurred_at, _id) order: from the office's days in the view, else `records`."""
        position = await self.position(cursor)
        if self._viewed(f):
            return await self.view.page(f, stream_of(str(f.office_id)), position, limit)
        return await self.records.find(after(f.query(), position)).sort(ORDER).limit(limit).to_list()

    def export(self, f: Filters, batch: int = 1000) -> AsyncIterable[Doc]:
        """Every match, streamed in chain order (streams by name, each in `seq` order) on every
        database. An office's period comes from its days in the view, put in `seq` order by
        `export.chain_ordered`. Otherwise MongoDB sorts by `(stream, seq)`, which the
        `chain_position` index gives; FerretDB pushes no sort down to SQLite and would sort the whole
        result before its first record (docs/performance.md, finding 14): there the collection is
        read once, unsorted, and `chain_ordered` orders it."""
        if self._viewed(f):
            rows = self.view.matching(f, stream_of(str(f.office_id)))
            return chain_ordered(rows, self.records.codec_options)
        cursor = self.records.find(f.query()).batch_size(batch)
        if not self.scans_only:
            return cursor.sort(CHAIN_ORDER)
        return chain_ordered(cursor, self.records.codec_options)

    def stat_rows(self, f: Filters) -> AsyncIterable[Doc]:
        if self._viewed(f):
            return self.view.matching(f, stream_of(str(f.office_id)))
        fields = {"_id": 0, "office_id": 1, "day": 1, "hour": 1, "usage_minutes": 1}
        return self.records.find(f.query(), fields).batch_size(2000)

    # ----------------------------------------------------------------- the day view's upkeep

    async def view_state(self) -> Doc:
        return await self.views.find_one({"_id": VIEW_STATE}) or {"_id": VIEW_STATE}

    async def set_view_state(self, **fields: Any) -> None:
        await self.views.update_one({"_id": VIEW_STATE}, {"$set": fields}, upsert=True)

    async def rebuild_view(self) -> int:
        """Copy every record into the day view (a scan of `records`, idempotent)."""
        with pymongo.timeout(REBUILD_DEADLINE_SECONDS):
            return await self.view.rebuild(self.records.find({}).batch_size(2000))

    def chain_scan(self, stream: str | None = None) -> AsyncCursor[Doc]:
        return self.records.find({"stream": stream} if stream else {}).sort(CHAIN_ORDER).batch_size(2000)

    async def find_by_hash(self, stream: str, hash_: str) -> Doc | None:
        return await self.records.find_one({"stream": stream, "hash": hash_}, {"seq": 1, "event_id": 1})

    async def all_heads(self) -> dict[str, Doc]:
        return {d["_id"]: d async for d in self.heads.find({})}

    async def all_checkpoints(self) -> dict[str, Doc]:
        return {d["_id"]: d async for d in self.checkpoints.find({})}

    async def sealed_for(self, ids: Sequence[str]) -> AsyncIterator[Doc]:
        for i in range(0, len(ids), CHUNK):
            async for doc in self.sealed.find({"_id": {"$in": list(ids[i : i + CHUNK])}}):
                yield doc

    # ----------------------------------------------------------------- retention

    async def checkpoint(self, stream: str) -> Doc | None:
        return await self.checkpoints.find_one({"_id": stream})

    async def first_seq_since(self, stream: str, cutoff: datetime) -> int | None:
        doc = await self.records.find_one(
            {"stream": stream, "recorded_at": {"$gte": cutoff}}, {"seq": 1}, sort=[("seq", ASCENDING)]
        )
        return None if doc is None else int(doc["seq"])

    async def record_at(self, stream: str, seq: int) -> Doc | None:
        return await self.records.find_one({"stream": stream, "seq": seq})

    async def save_checkpoint(self, doc: Doc) -> bool:
        """Checkpoints only move forward; False if another purge got there first."""
        moved = await self.checkpoints.replace_one({"_id": doc["_id"], "seq": {"$lt": doc["seq"]}}, doc)
        if moved.matched_count:
            return True
        try:
            await self.checkpoints.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def up_to(self, stream: str, seq: int) -> list[Doc]:
        """Id, stream and time of each record of `stream` up to `seq` (what retention removes)."""
        fields = {"_id": 1, "stream": 1, "occurred_at": 1}
        return await self.records.find({"stream": stream, "seq": {"$lte": seq}}, fields).to_list()

    async def delete(self, docs: Sequence[Doc]) -> int:
        """Records, their copies in the day view and their sealed values, in chunks (FerretDB refuses
        very large deletes)."""
        await self.view.remove(docs)
        ids = [str(d["_id"]) for d in docs]
        deleted = 0
        for i in range(0, len(ids), CHUNK):
            chunk = list(ids[i : i + CHUNK])
            deleted += (await self.records.delete_many({"_id": {"$in": chunk}})).deleted_count
            await self.sealed.delete_many({"_id": {"$in": chunk}})
        return deleted

    # ----------------------------------------------------------------- credentials and disclosures

    async def credential(self, key_id: str) -> Doc | None:
        return await self.credentials.find_one({"_id": key_id})

    async def put_credential(self, doc: Doc) -> None:
        await self.credentials.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    async def revoke_credential(self, key_id: str, now: datetime, by: str) -> bool:
        """Revoke an active key (it opens nothing from now on); False if unknown or revoked already."""
        changes = {"active": False, "revoked_at": now, "revoked_by": by}
        return await update_if(self.credentials, key_id, {"active": True}, {"$set": changes})

    async def insert_disclosure(self, doc: Doc) -> None:
        await self.disclosures.insert_one(doc)

    async def disclosures_list(self, status: str | None, limit: int) -> list[Doc]:
        """Disclosure requests, newest first (a small collection: a scan is fine off the hot path)."""
        query = {"status": status} if status else {}
        return await self.disclosures.find(query).sort("requested_at", -1).limit(limit).to_list()

    async def disclosure(self, disclosure_id: str) -> Doc | None:
        return await self.disclosures.find_one({"_id": disclosure_id})

    async def transition(self, disclosure_id: str, status: str, changes: dict[str, Any]) -> bool:
        """Conditional on the status read before: two approvers cannot both decide."""
        return await update_if(self.disclosures, disclosure_id, {"status": status}, {"$set": changes})

    async def count_disclosure(self, disclosure_id: str, records: int) -> None:
        await self.disclosures.update_one(
            {"_id": disclosure_id}, {"$inc": {"disclosed": 1, "records": records}}
        )
