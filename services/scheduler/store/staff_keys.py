"""Scheduler staff keys (issue 8): each acts for its offices, held by a person, stored as a SHA-256 hash.

The booking service keeps its own staff keys in its own database; the scheduler cannot read that
database (one MongoDB user per service, deploy/SECURITY.md), so it keeps its own. Keys are 256-bit
random strings, so a plain hash is enough (shared/store/keys.py). `*` (every office) is for the
development keys only. Roles: `staff` (the staff API) and `counsellor` (a counsellor's own schedule;
a counsellor key names its counsellor). The console's key (`delegates`) acts only for the person a
request names, with the roles, offices and counsellor it asserts (shared/acting.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pymongo.asynchronous.database import AsyncDatabase

from shared import acting
from shared.mongo import Doc
from shared.store import keys
from shared.store.keys import key_hash

PREFIX = "css"  # consult scheduler staff; booking's are csk_, portals' cpk_
EVERY_OFFICE = acting.EVERY_OFFICE
STAFF, COUNSELLOR = "staff", "counsellor"
OPERATOR = acting.OPERATOR  #: may replay the scheduler's parked messages
ROLES = frozenset({STAFF, COUNSELLOR, OPERATOR})


@dataclass(frozen=True)
class StaffKey:
    """Who is calling: a person, as staff of these offices or as one counsellor."""

    subject: str
    offices: tuple[str, ...]
    key_id: str = ""
    person: str = ""
    roles: frozenset[str] = frozenset({STAFF})
    delegates: bool = False
    counsellor: str | None = None  # role counsellor: whose schedule this person reads

    def may_act_for(self, office_id: str) -> bool:
        return office_id in self.offices or EVERY_OFFICE in self.offices

    @property
    def actor(self) -> str:
        """Who the access log and the request's history name (R10): the person."""
        return self.person

    @property
    def every_office(self) -> bool:
        return EVERY_OFFICE in self.offices

    def acting_for(self, headers: Iterable[tuple[str, str]]) -> StaffKey:
        """The key as the request uses it: itself, or the console acting for a person; a counsellor
        names themselves (`X-Acting-Counsellor`), nobody else does. Raises `acting.Refusal`."""
        act = acting.acting(headers, delegates=self.delegates, roles=self.roles, offices=self.offices)
        if act is None:
            return self
        if COUNSELLOR in act.roles and act.counsellor is None:
            raise acting.Refusal(401, "a counsellor acts only as a named counsellor (X-Acting-Counsellor)")
        if act.counsellor is not None and COUNSELLOR not in act.roles:
            raise acting.Refusal(403, "X-Acting-Counsellor: only with the role counsellor")
        return dataclasses.replace(
            self, person=act.person, roles=act.roles, offices=act.offices, counsellor=act.counsellor
        )


def new_key() -> str:
    return keys.new_key(PREFIX)


class StaffKeyStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["staff_keys"]

    async def register(
        self,
        key: str,
        subject: str,
        offices: list[str],
        now: datetime,
        holder: keys.Holder | None = None,
        *,
        counsellor: str | None = None,
    ) -> None:
        """Store a key's hash (idempotent: the same key again gets these offices and holder,
        un-revoked). Role counsellor: a plain key names its counsellor."""
        holder = holder or keys.Holder()
        fields = holder.fields(subject, ROLES, {STAFF})
        if COUNSELLOR in fields["roles"] and not holder.delegates and not counsellor:
            raise ValueError("a counsellor key names its counsellor (--counsellor)")
        fields |= {"subject": subject, "offices": offices, "revoked": False}
        fields["counsellor"] = None if holder.delegates else counsellor
        await self.collection.update_one(
            {"_id": key_hash(key)}, {"$set": fields, "$setOnInsert": {"created_at": now}}, upsert=True
        )

    async def create(
        self, subject: str, offices: list[str], now: datetime, holder: keys.Holder, counsellor: str | None
    ) -> str:
        """A new key; only its hash is kept, so the key is shown once."""
        key = new_key()
        await self.register(key, subject, offices, now, holder, counsellor=counsellor)
        return key

    async def revoke(self, subject: str) -> int:
        done = await self.collection.update_many({"subject": subject}, {"$set": {"revoked": True}})
        return done.matched_count

    async def revoke_key(self, kid: str, now: datetime, by: str) -> Doc | None:
        """Revoke one key by its id (`css-…`); its document as it was, or None."""
        return await keys.revoke_key(self.collection, kid, PREFIX, now=now, by=by)

    async def stored(self, key: str) -> Doc | None:
        return await self.collection.find_one({"_id": key_hash(key)})  # by _id alone: FerretDB's index

    async def find(self, key: str) -> StaffKey | None:
        doc = await self.stored(key)
        if doc is None or doc.get("revoked"):
            return None
        return StaffKey(
            subject=doc["subject"],
            offices=tuple(doc["offices"]),
            counsellor=doc.get("counsellor"),
            **keys.holder_of(doc, PREFIX, {STAFF}),
        )
