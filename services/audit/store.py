"""The only module of the audit service that talks to MongoDB.

Collections: `records` (queryable, pseudonymised, chained; append-only), `heads` (last seq and hash
per stream, a hint the writer repairs), `checkpoints` (where the retention job cut each stream),
`sealed` (raw device values, AES-GCM), `credentials` (hashed API keys), `disclosures` (legal requests).
FerretDB scans a collection for any query, so the ingest path only inserts; queries are for the API.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.audit.chain import GENESIS
from services.audit.export import chain_ordered
from shared.mongo import Doc
from shared.store.backend import is_ferretdb
from shared.store.conditional import update_if

ORDER = [("occurred_at", ASCENDING), ("_id", ASCENDING)]
CHAIN_ORDER = [("stream", ASCENDING), ("seq", ASCENDING)]
SEARCH_INDEXES = (
    ORDER,
    [("office_id", ASCENDING), ("occurred_at", ASCENDING)],
    [("booking_id", ASCENDING), ("occurred_at", ASCENDING)],
    [("device_key", ASCENDING), ("occurred_at", ASCENDING)],
    [("type", ASCENDING), ("occurred_at", ASCENDING)],
    [("stream", ASCENDING), ("recorded_at", ASCENDING)],
)
DUPLICATE_KEY = 11000
CHUNK = 500
ORDERED_BATCH = 100  # FerretDB's own write batch: an ordered insert is ordered only within one


def _only_duplicates(exc: BulkWriteError) -> None:
    if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
        raise exc


class AuditStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self.records = db["records"]
        self.heads = db["heads"]
        self.checkpoints = db["checkpoints"]
        self.sealed = db["sealed"]
        self.credentials = db["credentials"]
        self.disclosures = db["disclosures"]
        self.scans_only = False  # set by ensure_indexes: the server cannot stream a sorted result

    async def ensure_indexes(self) -> None:
        # _id is the event id: the unique index that makes ingest idempotent
        await self.records.create_index(CHAIN_ORDER, unique=True, name="chain_position")
        # FerretDB's SQLite backend answers every query with a scan: search indexes would only slow
        # the inserts there. MongoDB gets them.
        self.scans_only = await is_ferretdb(self.db.client)
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
            _only_duplicates(exc)  # a redelivered event: its values are sealed already

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

    async def has_record(self, record_id: str) -> bool:
        return await self.records.find_one({"_id": record_id}, {"_id": 1}) is not None

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

    async def search(self, query: Doc, limit: int) -> list[Doc]:
        return await self.records.find(query).sort(ORDER).limit(limit).to_list()

    def export(self, query: Doc, batch: int = 1000) -> AsyncIterable[Doc]:
        """Every match, streamed in chain order (streams by name, each in `seq` order) on every
        database. MongoDB sorts by `(stream, seq)`, which the `chain_position` index gives. FerretDB
        pushes no sort down to SQLite and would sort the whole result before its first record
        (docs/performance.md, finding 14): there the collection is read once, unsorted, and
        `export.chain_ordered` orders it."""
        cursor = self.records.find(query).batch_size(batch)
        if not self.scans_only:
            return cursor.sort(CHAIN_ORDER)
        return chain_ordered(cursor, self.records.codec_options)

    def stat_rows(self, query: Doc) -> AsyncCursor[Doc]:
        fields = {"_id": 0, "office_id": 1, "day": 1, "hour": 1, "usage_minutes": 1}
        return self.records.find(query, fields).batch_size(2000)

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

    async def ids_up_to(self, stream: str, seq: int) -> list[str]:
        return [
            d["_id"] async for d in self.records.find({"stream": stream, "seq": {"$lte": seq}}, {"_id": 1})
        ]

    async def delete(self, ids: Sequence[str]) -> int:
        """Records and their sealed values, in chunks (FerretDB refuses very large deletes)."""
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
