"""Portal requests: the idempotency claim and the answer given, with the rejection event (outbox).

FerretDB has no transactions, so "the same key gives one booking" rests on a unique `_id` per
(portal, idempotency key): the first request inserts the claim, every other one finds it and waits for
its answer. A claim whose owner died (no answer after `stale` seconds) is taken over once; one whose
owner could not decide (the database failing past its retries) is released and taken over at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.events import Envelope
from shared.mongo import Doc, as_stored
from shared.sealing import Sealer
from shared.store import outbox
from shared.store.conditional import update_if

#: the claim time of a released claim: stale for any `stale`
RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Claim:
    mine: bool
    doc: Doc


def request_key(portal_id: str, idempotency_key: str) -> str:
    return f"{portal_id}\x1f{idempotency_key}"


class RequestStore:
    def __init__(self, collection: AsyncCollection[Doc], sealer: Sealer | None = None) -> None:
        self.collection = collection
        self.sealer = sealer  # booking.rejected rests sealed in the outbox (R12)
        self.on_write: Callable[[Any], None] = lambda _id: None  # wakes the outbox relay

    async def claim(
        self,
        *,
        portal_id: str,
        idempotency_key: str,
        office_id: str,
        body_hash: str,
        booking_id: str,
        now: datetime,
    ) -> Claim:
        doc: Doc = {
            "_id": request_key(portal_id, idempotency_key),
            "portal_id": portal_id,
            "idempotency_key": idempotency_key,
            "office_id": office_id,
            "body_hash": body_hash,
            "booking_id": booking_id,
            "state": "claimed",
            "claimed_at": as_stored(now),  # as stored, so a release can name it
            **outbox.new_document_fields([]),
        }
        try:
            await self.collection.insert_one(doc)
        except DuplicateKeyError:
            existing = await self.get(portal_id, idempotency_key)
            if existing is None:  # vanished in between: impossible unless deleted by hand
                raise
            return Claim(False, existing)
        return Claim(True, doc)

    async def get(self, portal_id: str, idempotency_key: str) -> Doc | None:
        return await self.collection.find_one({"_id": request_key(portal_id, idempotency_key)}, {"outbox": 0})

    async def take_over(self, doc: Doc, now: datetime, stale: timedelta) -> datetime | None:
        """The claim's owner gave no answer in time (or gave it up): claim it again, as of `now`.

        Returns the new claim time, or None if the claim is not stale or another request took it.
        (FerretDB may let two takers both succeed; the decision is idempotent per booking id.)"""
        if doc.get("state") != "claimed" or now - doc["claimed_at"] < stale:
            return None
        now = as_stored(now)
        expect = {"state": "claimed", "claimed_at": doc["claimed_at"]}
        taken = await update_if(self.collection, doc["_id"], expect, {"$set": {"claimed_at": now}})
        return now if taken else None

    async def release(self, key: str, claimed_at: datetime) -> None:
        """Give a claim up after failing to decide: the next request with the key takes it at once."""
        expect = {"state": "claimed", "claimed_at": claimed_at}
        await update_if(self.collection, key, expect, {"$set": {"claimed_at": RELEASED}})

    async def finish(
        self, key: str, status: int, body: Doc, events: list[Envelope[Any]], now: datetime
    ) -> None:
        """Record the answer (and the rejection event, if any) in one write."""
        update = outbox.merge(
            {"$set": {"state": "done", "status": status, "answer": body, "answered_at": now}},
            events,
            sealer=self.sealer,
        )
        await outbox.announce(self.collection, key, events)
        # by _id alone: nothing else writes a claimed request (waiters only read it)
        await self.collection.update_one({"_id": key}, update)
        if events:
            self.on_write(key)

    async def record_refusal(self, message_id: str, office_id: str, events: list[Envelope[Any]]) -> None:
        """A refusal that has no claim of its own (e.g. the key reused with another body): its event only."""
        doc = {"_id": f"refusal\x1f{message_id}", "office_id": office_id, "state": "refusal"}
        with contextlib.suppress(DuplicateKeyError):
            await outbox.announce(self.collection, doc["_id"], events)
            await self.collection.insert_one(
                {**doc, **outbox.new_document_fields(events, sealer=self.sealer)}
            )
            self.on_write(doc["_id"])
