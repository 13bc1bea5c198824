"""API credentials (stored as hashes only) and the device reports portals send (R10)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared import acting
from shared.events import Envelope
from shared.mongo import Doc
from shared.sealing import Sealer
from shared.store import keys, outbox
from shared.store.keys import key_hash

Kind = Literal["portal", "staff"]
PREFIX: dict[str, str] = {"portal": "cpk", "staff": "csk"}
STAFF = "staff"  #: the role of office staff, the one role of booking's staff keys
OPERATOR = acting.OPERATOR  #: may replay booking's parked messages (the operations page)
ROLES: dict[str, frozenset[str]] = {"portal": frozenset(), "staff": frozenset({STAFF, OPERATOR})}
#: what a key holds when none are named (and a key stored before roles existed): never operator
DEFAULT_ROLES: dict[str, frozenset[str]] = {"portal": frozenset(), "staff": frozenset({STAFF})}


@dataclass(frozen=True)
class Credential:
    """Who is calling: a portal (books for its offices) or an office's staff member, a person (the
    console's key: the person it acts for, with the roles and offices it asserts)."""

    kind: Kind
    subject: str  # portal id or staff id
    offices: tuple[str, ...]
    signed: bool = False  # issue 8: this portal's intake requests must carry an HMAC signature
    key_id: str = ""
    person: str = ""  # staff: the person behind the key; portals have none
    roles: frozenset[str] = frozenset()
    delegates: bool = False

    @property
    def actor(self) -> str:
        """Who the access log and the history name (R10): the person, or the portal."""
        return self.person if self.kind == "staff" and self.person else f"{self.kind}:{self.subject}"

    def may_act_for(self, office_id: str) -> bool:
        return office_id in self.offices or acting.EVERY_OFFICE in self.offices

    def acting_for(self, headers: Iterable[tuple[str, str]]) -> Credential:
        """This credential as the request uses it: itself, or the console acting for a person
        (`shared/acting.py`; raises `acting.Refusal`)."""
        act = acting.acting(headers, delegates=self.delegates, roles=self.roles, offices=self.offices)
        if act is None:
            return self
        return dataclasses.replace(self, person=act.person, roles=act.roles, offices=act.offices)


def new_key(kind: Kind) -> str:
    return keys.new_key(PREFIX[kind])


class CredentialStore:
    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index("subject")

    async def register(
        self,
        key: str,
        kind: Kind,
        subject: str,
        offices: list[str],
        now: datetime,
        *,
        holder: keys.Holder | None = None,
    ) -> None:
        """Store a key's hash (idempotent: the same key registered again updates its offices). A staff
        key names its holder: a person (default: the staff id) with the role staff."""
        fields: Doc = {"kind": kind, "subject": subject, "offices": offices, "revoked": False}
        if kind == "staff":
            fields |= (holder or keys.Holder()).fields(subject, ROLES["staff"], DEFAULT_ROLES["staff"])
        await self.collection.update_one(
            {"_id": key_hash(key)}, {"$set": fields, "$setOnInsert": {"created_at": now}}, upsert=True
        )

    async def create(
        self, kind: Kind, subject: str, offices: list[str], now: datetime, holder: keys.Holder | None = None
    ) -> str:
        """A new key; only its hash is kept, so the key is shown once."""
        key = new_key(kind)
        await self.register(key, kind, subject, offices, now, holder=holder)
        return key

    async def revoke(self, subject: str) -> int:
        done = await self.collection.update_many({"subject": subject}, {"$set": {"revoked": True}})
        return done.modified_count

    async def revoke_key(self, kid: str, kind: Kind, now: datetime, by: str) -> Doc | None:
        """Revoke one key by its id (`csk-…`); its document as it was, or None."""
        return await keys.revoke_key(self.collection, kid, PREFIX[kind], now=now, by=by)

    async def find(self, key: str) -> Credential | None:
        d = await self.collection.find_one({"_id": key_hash(key)})  # by _id alone: FerretDB's index
        if d is None or d.get("revoked"):
            return None
        holder = keys.holder_of(d, PREFIX[d["kind"]], DEFAULT_ROLES[d["kind"]])
        if d["kind"] != "staff":
            holder["person"] = ""
        return Credential(
            kind=d["kind"],
            subject=d["subject"],
            offices=tuple(d["offices"]),
            signed=bool(d.get("signed")),
            **holder,
        )

    async def require_signing(self, subject: str, on: bool = True) -> int:
        """Make this portal's keys sign their intake requests (services/booking/signing.py), or not.
        Returns how many of its keys there are (flagged already or now), 0 for an unknown portal."""
        done = await self.collection.update_many(
            {"kind": "portal", "subject": subject}, {"$set": {"signed": on}}
        )
        return done.matched_count

    async def portal_known(self, portal_id: str, office_id: str) -> bool:
        d = await self.collection.find_one(
            {"kind": "portal", "subject": portal_id, "revoked": False, "offices": {"$in": [office_id, "*"]}}
        )
        return d is not None


class DeviceStore:
    """Each device report becomes a device.recorded event for audit (R10), written once per message."""

    def __init__(self, collection: AsyncCollection[Doc], sealer: Sealer | None = None) -> None:
        self.collection = collection
        self.sealer = sealer  # device values rest sealed until the relay publishes them (R11, R12)
        self.on_write: Callable[[Any], None] = lambda _id: None  # wakes the outbox relay

    async def record(self, message_id: str, office_id: str, events: list[Envelope[Any]]) -> None:
        with contextlib.suppress(DuplicateKeyError):
            await self.collection.insert_one(
                {
                    "_id": message_id,
                    "office_id": office_id,
                    **outbox.new_document_fields(events, sealer=self.sealer),
                }
            )
            self.on_write(message_id)
