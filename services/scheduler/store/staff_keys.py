"""Scheduler staff keys (issue 8): each acts for one office, stored as a SHA-256 hash only.

The booking service keeps its own staff keys in its own database; the scheduler cannot read that
database (one MongoDB user per service, deploy/SECURITY.md), so it keeps its own. Keys are 256-bit
random strings, so a plain hash is enough. `*` (every office) is for the development key only.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from pymongo.asynchronous.database import AsyncDatabase

from shared.mongo import Doc

PREFIX = "css"  # consult scheduler staff; booking's are csk_, portals' cpk_
EVERY_OFFICE = "*"


@dataclass(frozen=True)
class StaffKey:
    """Who is calling the staff API: a staff member (or desk) of these offices."""

    subject: str
    offices: tuple[str, ...]

    def may_act_for(self, office_id: str) -> bool:
        return office_id in self.offices or EVERY_OFFICE in self.offices

    @property
    def every_office(self) -> bool:
        return EVERY_OFFICE in self.offices


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return f"{PREFIX}_{secrets.token_urlsafe(32)}"


class StaffKeyStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["staff_keys"]

    async def ensure_indexes(self) -> None:
        await self.collection.create_index("subject")

    async def register(self, key: str, subject: str, offices: list[str], now: datetime) -> None:
        """Store a key's hash (idempotent: the same key again gets these offices, un-revoked)."""
        await self.collection.update_one(
            {"_id": key_hash(key)},
            {
                "$set": {"subject": subject, "offices": offices, "revoked": False},
                "$setOnInsert": {"created_at": now},
            },
            upsert=True,
        )

    async def create(self, subject: str, office_id: str, now: datetime) -> str:
        """A new key for one office; only its hash is kept, so the key is shown once."""
        key = new_key()
        await self.register(key, subject, [office_id], now)
        return key

    async def revoke(self, subject: str) -> int:
        done = await self.collection.update_many({"subject": subject}, {"$set": {"revoked": True}})
        return done.matched_count

    async def find(self, key: str) -> StaffKey | None:
        doc = await self.collection.find_one({"_id": key_hash(key)})
        if doc is None or doc.get("revoked"):
            return None
        return StaffKey(subject=doc["subject"], offices=tuple(doc["offices"]))
