"""The console's own database (`<DB_PREFIX>console`): accounts, sessions, sign-in attempts, used TOTP
steps. The only module of the console that talks to MongoDB; every read on a request's path is by
`_id`. It never opens another service's database."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, replace
from datetime import datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.console.accounts import Account
from services.console.ratelimit import Attempts
from services.console.sessions import Session
from shared.mongo import Doc
from shared.sealing import Sealer


class AccountExists(Exception):
    pass


class Accounts:
    def __init__(self, db: AsyncDatabase[Doc], sealer: Sealer) -> None:
        self.collection = db["accounts"]
        self.sealer = sealer  # the TOTP secret rests sealed (R12)

    def _doc(self, a: Account) -> Doc:
        doc: dict[str, Any] = asdict(a)
        doc["_id"] = doc.pop("person_id")
        secret = doc.pop("totp_secret")
        doc["totp_sealed"] = self.sealer.seal(secret, f"totp:{a.person_id}") if secret else None
        doc["roles"], doc["offices"] = list(a.roles), list(a.offices)
        return doc

    def _account(self, d: Doc) -> Account:
        sealed = d.get("totp_sealed")
        return Account(
            person_id=d["_id"],
            name=d["name"],
            roles=tuple(d["roles"]),
            password_hash=d["password_hash"],
            offices=tuple(d.get("offices", ())),
            counsellor_id=d.get("counsellor_id"),
            counsellor_office=d.get("counsellor_office"),
            totp_secret=self.sealer.open(sealed, f"totp:{d['_id']}") if sealed else None,
            active=bool(d.get("active", True)),
            sessions_valid_from=d.get("sessions_valid_from"),
            created_at=d.get("created_at"),
        )

    async def create(self, account: Account) -> None:
        try:
            await self.collection.insert_one(self._doc(account))
        except DuplicateKeyError as exc:
            raise AccountExists(account.person_id) from exc

    async def put(self, account: Account) -> None:
        """Replace the account (password, roles, second factor): by `_id`."""
        await self.collection.replace_one({"_id": account.person_id}, self._doc(account), upsert=True)

    async def get(self, person_id: str) -> Account | None:
        d = await self.collection.find_one({"_id": person_id})
        return self._account(d) if d else None

    async def all(self) -> list[Account]:
        return [self._account(d) async for d in self.collection.find({}).sort("_id", 1)]

    async def end_sessions(self, person_id: str, now: datetime) -> None:
        """Sign out everywhere: every session begun before now is over."""
        account = await self.get(person_id)
        if account is not None:
            await self.put(replace(account, sessions_valid_from=now))


class Sessions:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["sessions"]

    async def create(self, s: Session) -> None:
        doc = asdict(s)
        doc["_id"] = doc.pop("session_id")
        await self.collection.insert_one(doc)

    async def get(self, session_id: str) -> Session | None:
        d = await self.collection.find_one({"_id": session_id})
        if d is None:
            return None
        d["session_id"] = d.pop("_id")
        return Session(**{k: v for k, v in d.items() if k in Session.__dataclass_fields__})

    async def touch(self, session_id: str, now: datetime) -> None:
        await self.collection.update_one({"_id": session_id}, {"$set": {"last_seen": now}})

    async def delete(self, session_id: str) -> None:
        await self.collection.delete_one({"_id": session_id})

    async def sweep(self, idle_before: datetime) -> int:
        """Delete sessions idle since before `idle_before` (a background job; ended ones are refused
        on use anyway)."""
        done = await self.collection.delete_many({"last_seen": {"$lt": idle_before}})
        return done.deleted_count


class TotpSteps:
    """A TOTP code is used once: its (person, time step) is a unique insert."""

    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["totp_steps"]

    async def use(self, person_id: str, step: int, now: datetime) -> bool:
        try:
            await self.collection.insert_one({"_id": f"{person_id}:{step}", "at": now})
        except DuplicateKeyError:
            return False
        return True

    async def sweep(self, before: datetime) -> None:
        with contextlib.suppress(Exception):
            await self.collection.delete_many({"at": {"$lt": before}})


class Stores:
    def __init__(self, db: AsyncDatabase[Doc], sealer: Sealer, secret: str) -> None:
        self.accounts = Accounts(db, sealer)
        self.sessions = Sessions(db)
        self.attempts = Attempts(db["signin_attempts"], secret)
        self.totp = TotpSteps(db)
