"""Delivery records: the only module that talks to MongoDB. One document per notice, `_id` = delivery key.

A send is claimed before it starts: inserting the record (unique `_id`) or taking over a claim whose
lease ran out, or a failed one being replayed. A claim carries a random token, so only its holder can
mark the outcome. Marking `sent`/`failed` and appending the notification event to the document's outbox
is one `update_one` (FerretDB has no transactions; this needs none).

    claimed ──send accepted──> sent            (notification.sent in the outbox)
       │ ──5xx / bad address──> failed         (notification.failed in the outbox; message parked)
       │ ──4xx / no server────> claimed, lease released (retried through the delay queues)
       └── crash ─────────────> claimed until the lease ends, then taken over: same Message-ID

The server's acceptance is first recorded by one insert into `<collection>_accepted` (`_id` = the
delivery key), the smallest durable write there is, made before the SMTP session is even closed; the
full mark (state and outbox event) follows. A take-over that finds the acceptance settles the record
instead of sending again. Only a crash between the server's `250` and that insert, or a connection
lost after the body went out, leaves the next attempt an *ambiguous resend*: counted on the record
(`ambiguous_resends`) and sent with the first attempt's Message-ID.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.notifier.domain import Notice
from shared.clock import Clock
from shared.events import Envelope
from shared.logsafe import redact_text
from shared.mongo import Doc
from shared.store import outbox
from shared.store.conditional import find_one_and_update_if, update_if


@dataclass(frozen=True)
class Claim:
    """This worker may send the notice now."""

    key: str
    token: str
    message_id: str
    attempt: int  # how many claims this notice has had since it was created or replayed
    resumed: bool  # an earlier attempt may already have reached the server (crash, or no answer)


@dataclass(frozen=True)
class Settled:
    """Nothing to send: the notice went out, or failed for good (bad address, refused by the server)."""

    state: str
    message_id: str


@dataclass(frozen=True)
class Busy:
    """Another worker holds a live claim on this notice."""

    lease_until: datetime | None


class Deliveries:
    def __init__(self, collection: AsyncCollection[Doc], clock: Clock, lease: timedelta) -> None:
        self.collection = collection
        self.accepts: AsyncCollection[Doc] = collection.database[f"{collection.name}_accepted"]
        self.clock = clock
        self.lease = lease

    async def ensure_indexes(self) -> None:
        await self.collection.create_index("booking_id")

    async def claim(self, notice: Notice, message_id: str, event_id: str) -> Claim | Settled | Busy:
        now = self.clock.now()
        token = uuid4().hex
        try:
            await self.collection.insert_one(
                {
                    "_id": notice.key,
                    "state": "claimed",
                    "token": token,
                    "lease_until": now + self.lease,
                    "attempts": 1,
                    "released": False,
                    "message_id": message_id,
                    "kind": notice.kind.value,
                    "office_id": notice.office_id,
                    "booking_id": notice.booking_id,
                    "person_key": notice.person_key,
                    "event_id": event_id,
                    "created_at": now,
                    **outbox.new_document_fields([]),
                }
            )
            return Claim(notice.key, token, message_id, attempt=1, resumed=False)
        except DuplicateKeyError:
            pass
        return await self._take_over(notice.key, token, now)

    async def _take_over(self, key: str, token: str, now: datetime) -> Claim | Settled | Busy:
        lease_until = now + self.lease
        # A failure that was not the message's own fault (SMTP down past every retry, a template bug),
        # replayed by ops from the parking queue, starts a fresh series of attempts.
        doc = await find_one_and_update_if(
            self.collection,
            key,
            {"state": "failed", "permanent": False},
            {
                "$set": {
                    "state": "claimed",
                    "token": token,
                    "lease_until": lease_until,
                    "attempts": 1,
                    "released": False,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return Claim(key, token, doc["message_id"], attempt=int(doc["attempts"]), resumed=False)
        before = await find_one_and_update_if(
            self.collection,
            key,
            {"state": "claimed", "lease_until": {"$lte": now}},
            {
                "$set": {"token": token, "lease_until": lease_until, "released": False, "ambiguous": False},
                "$inc": {"attempts": 1},
            },
            return_document=ReturnDocument.BEFORE,
        )
        if before is not None:
            # Not released by a failed attempt: its holder vanished mid-send (the crash window); or
            # released after a send that got no answer once the body had gone out.
            resumed = not before.get("released", False) or bool(before.get("ambiguous", False))
            return Claim(key, token, before["message_id"], int(before["attempts"]) + 1, resumed)
        current = await self.collection.find_one(
            {"_id": key}, {"state": 1, "message_id": 1, "lease_until": 1}
        )
        if current is None or current["state"] == "claimed":
            return Busy(current["lease_until"] if current else None)
        return Settled(current["state"], current["message_id"])

    async def record_accepted(self, claim: Claim, response: str) -> None:
        """The server's acceptance, durable in one insert (insert-only, by `_id`)."""
        doc = {
            "_id": claim.key,
            "token": claim.token,
            "message_id": claim.message_id,
            "smtp_response": redact_text(response)[:500],  # R12: servers may echo the address
            "at": self.clock.now(),
        }
        with contextlib.suppress(DuplicateKeyError):  # an ambiguous resend accepted again: first stands
            await self.accepts.insert_one(doc)

    async def accepted(self, key: str) -> Doc | None:
        """The recorded acceptance of an earlier attempt, if any."""
        return await self.accepts.find_one({"_id": key})

    async def count_ambiguous_resend(self, claim: Claim) -> None:
        """This claim sends again what may already have been delivered: say so on the record."""
        await update_if(
            self.collection,
            claim.key,
            {"token": claim.token},
            {"$inc": {"ambiguous_resends": 1}, "$set": {"last_ambiguous_at": self.clock.now()}},
        )

    async def mark_sent(self, claim: Claim, response: str, events: list[Envelope[Any]]) -> bool:
        """Record the server's acceptance; False if this claim was taken over meanwhile."""
        now = self.clock.now()
        update = {
            "$set": {
                "state": "sent",
                "sent_at": now,
                "smtp_response": redact_text(response)[:500],
                "lease_until": None,
            },
            "$unset": {"token": ""},
        }
        await outbox.announce(self.collection, claim.key, events)
        return await update_if(
            self.collection, claim.key, {"token": claim.token}, outbox.merge(update, events)
        )

    async def mark_failed(
        self, claim: Claim, error: str, permanent: bool, events: list[Envelope[Any]]
    ) -> bool:
        """Record a failure. A permanent one (bad address, 5xx) is settled: duplicates send nothing."""
        now = self.clock.now()
        update = {
            "$set": {
                "state": "failed",
                "permanent": permanent,
                "failed_at": now,
                "last_error": redact_text(error)[:500],
                "lease_until": None,
            },
            "$unset": {"token": ""},
        }
        await outbox.announce(self.collection, claim.key, events)
        return await update_if(
            self.collection, claim.key, {"token": claim.token}, outbox.merge(update, events)
        )

    async def release(self, claim: Claim, error: str, *, ambiguous: bool = False) -> None:
        """A transient failure: let the next attempt claim at once instead of waiting for the lease.

        `ambiguous`: the body went out and no answer came, so the next attempt is an ambiguous resend."""
        fields = {"lease_until": self.clock.now(), "released": True, "last_error": redact_text(error)[:500]}
        await update_if(
            self.collection,
            claim.key,
            {"token": claim.token, "state": "claimed"},
            {"$set": {**fields, "ambiguous": ambiguous}},
        )

    async def get(self, key: str) -> Doc | None:
        return await self.collection.find_one({"_id": key}, {"outbox": 0})

    async def for_booking(self, booking_id: str) -> list[Doc]:
        return await self.collection.find({"booking_id": booking_id}, {"outbox": 0}).to_list()
