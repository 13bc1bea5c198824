"""Which scheduler replica runs the timers: one lease document, renewed, taken over when expired."""

from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.mongo import Doc

LEASE_ID = "timers"


class LeaseStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["leases"]

    async def acquire(self, holder: str, now: datetime, ttl: timedelta) -> bool:
        """Renew our lease or take an expired one; False while another holder's lease runs."""
        try:
            doc = await self.collection.find_one_and_update(
                {"_id": LEASE_ID, "$or": [{"holder": holder}, {"expires_at": {"$lt": now}}]},
                {"$set": {"holder": holder, "expires_at": now + ttl, "renewed_at": now}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # the document exists and is someone else's, still valid
            return False
        if doc is None or doc.get("holder") != holder:
            return False
        # FerretDB applies concurrent conditional updates as read-then-write: two replicas taking an
        # expired lease may both "succeed". Reading back shows who wrote last; a replica that read
        # itself before the other's write steps down on its next renewal (its filter no longer matches).
        now_doc = await self.collection.find_one({"_id": LEASE_ID})
        return now_doc is not None and now_doc.get("holder") == holder

    async def release(self, holder: str, now: datetime) -> None:
        """Graceful stop: let another replica take over at once instead of after the expiry."""
        await self.collection.update_one({"_id": LEASE_ID, "holder": holder}, {"$set": {"expires_at": now}})

    async def current(self) -> Doc | None:
        return await self.collection.find_one({"_id": LEASE_ID})
