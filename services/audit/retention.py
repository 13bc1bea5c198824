"""Retention (R10, office policy): remove records past their office's keeping period, as a job.

FerretDB has no TTL indexes, and a TTL index would cut holes anywhere in a chain. The job removes a
*prefix* of each stream: every record up to the last one recorded before the cutoff. It first writes
a checkpoint (seq and hash of the last removed record, with a MAC) so verification starts from there,
then deletes records and their sealed values, then appends an `audit.retention_purged` record.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pymongo

from services.audit import chain, records
from services.audit.config import Settings
from services.audit.records import Entry
from services.audit.store import AuditStore
from shared.mongo import Doc

log = logging.getLogger(__name__)
PASS_DEADLINE_SECONDS = 3600.0
Submit = Callable[[Entry], Awaitable[None]]


@dataclass(frozen=True)
class Purged:
    stream: str
    up_to_seq: int
    deleted: int
    cutoff: datetime


def keeping_period(settings: Settings, stream: str) -> timedelta:
    """The audit setting for the office, else the office policy's `record_retention`, else the default."""
    if stream in settings.audit_retention_days_by_office:
        return timedelta(days=settings.audit_retention_days_by_office[stream])
    policy = settings.policies().get(stream)
    if policy is not None:
        return policy.record_retention
    return timedelta(days=settings.audit_retention_days)


def checkpoint(stream: str, last: Doc, *, cutoff: datetime, now: datetime, key: bytes) -> Doc:
    doc: Doc = {
        "_id": stream,
        "seq": int(last["seq"]),
        "hash": str(last["hash"]),
        "event_id": last.get("event_id"),
        "cutoff": records.ms(cutoff),
        "at": records.ms(now),
    }
    doc["mac"] = chain.digest(key, doc, frozenset({"mac"}))
    return doc


async def purge_stream(
    store: AuditStore, stream: str, *, cutoff: datetime, now: datetime, key: bytes, submit: Submit
) -> Purged | None:
    head = await store.head(stream)
    if head is None:
        return None
    first_kept = await store.first_seq_since(stream, cutoff)
    up_to = (first_kept - 1) if first_kept is not None else int(head["seq"])
    done = await store.checkpoint(stream)
    if up_to < 1 or (done is not None and up_to <= done["seq"]):
        return None
    last = await store.record_at(stream, up_to)
    if last is None:
        log.error("retention: %s seq %d missing; not purging a broken chain", stream, up_to)
        return None
    if not await store.save_checkpoint(checkpoint(stream, last, cutoff=cutoff, now=now, key=key)):
        return None  # another replica purges this stream right now
    deleted = await store.delete(await store.up_to(stream, up_to))
    details = {
        "stream": stream,
        "up_to_seq": up_to,
        "hash": last["hash"],
        "deleted": deleted,
        "cutoff": cutoff.isoformat(),
    }
    await submit(
        records.internal(
            "audit.retention_purged", actor="retention-job", details=details, now=now, stream=stream
        )
    )
    return Purged(stream, up_to, deleted, cutoff)


async def purge(
    store: AuditStore, settings: Settings, *, now: datetime, key: bytes, submit: Submit
) -> list[Purged]:
    """One pass over every stream; safe to run from several replicas at once."""
    with pymongo.timeout(PASS_DEADLINE_SECONDS):  # scans and chunked deletes: a batch job's deadline
        return await _purge(store, settings, now=now, key=key, submit=submit)


async def _purge(
    store: AuditStore, settings: Settings, *, now: datetime, key: bytes, submit: Submit
) -> list[Purged]:
    done: list[Purged] = []
    for stream in sorted(await store.all_heads()):
        cutoff = now - keeping_period(settings, stream)
        result = await purge_stream(store, stream, cutoff=cutoff, now=now, key=key, submit=submit)
        if result is not None:
            log.info("retention: %s purged %d records up to seq %d", stream, result.deleted, result.up_to_seq)
            done.append(result)
    return done
