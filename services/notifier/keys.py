"""The notifier's operator keys: who may ask it to replay its parked messages over HTTP
(`POST /v1/ops/parked/replay`, shared/parking.py). The notifier had no HTTP API of its own before;
this is the same idiom as the scheduler's staff keys (shared/store/keys.py, shared/acting.py): a key
stored as its SHA-256, held by a person, with the one role `operator`; the console's key
(`delegates`) acts only for the person each request names (`X-Acting-Person`, `X-Acting-Roles`).

    python -m services.notifier.keys ensure-console-key .local/console-notifier-key.txt   # make up
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from pymongo.asynchronous.database import AsyncDatabase

from services.notifier.config import Settings
from shared import acting
from shared.clock import SystemClock
from shared.keyfile import kept_key
from shared.mongo import Doc, connect
from shared.store import keys
from shared.store.keys import Holder, key_hash

PREFIX = "cnk"  # consult notifier key
OPERATOR = acting.OPERATOR
ROLES = frozenset({OPERATOR})
CONSOLE_SUBJECT, CONSOLE_NAME = "dev-console", "開発用コンソール"


@dataclass(frozen=True)
class OpsKey:
    subject: str
    key_id: str = ""
    person: str = ""
    roles: frozenset[str] = ROLES
    delegates: bool = False

    @property
    def actor(self) -> str:
        return self.person

    def acting_for(self, headers: Iterable[tuple[str, str]]) -> OpsKey:
        """The key as the request uses it: itself, or the console for a person (acting.Refusal)."""
        act = acting.acting(headers, delegates=self.delegates, roles=self.roles)
        return self if act is None else dataclasses.replace(self, person=act.person, roles=act.roles)


class OpsKeyStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["ops_keys"]

    async def register(self, key: str, subject: str, now: datetime, holder: Holder | None = None) -> None:
        """Store a key's hash (idempotent: the same key again gets this holder, un-revoked)."""
        fields = (holder or Holder()).fields(subject, ROLES, ROLES) | {"subject": subject, "revoked": False}
        await self.collection.update_one(
            {"_id": key_hash(key)}, {"$set": fields, "$setOnInsert": {"created_at": now}}, upsert=True
        )

    async def create(self, subject: str, now: datetime, holder: Holder) -> str:
        """A new key; only its hash is kept, so the key is shown once."""
        key = keys.new_key(PREFIX)
        await self.register(key, subject, now, holder)
        return key

    async def revoke_key(self, kid: str, now: datetime, by: str) -> Doc | None:
        return await keys.revoke_key(self.collection, kid, PREFIX, now=now, by=by)

    async def stored(self, key: str) -> Doc | None:
        return await self.collection.find_one({"_id": key_hash(key)})  # by _id alone: FerretDB's index

    async def find(self, key: str) -> OpsKey | None:
        doc = await self.stored(key)
        if doc is None or doc.get("revoked"):
            return None
        return OpsKey(subject=doc["subject"], **keys.holder_of(doc, PREFIX, ROLES))


def operator_auth(store: OpsKeyStore) -> Any:
    """Dependency: a notifier key (`Authorization: Bearer`) with the role operator; 401/403 else."""

    async def operator(request: Request) -> OpsKey:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = await store.find(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if key is None:
            raise HTTPException(401, "a notifier operator key is required", {"WWW-Authenticate": "Bearer"})
        key = acting.as_requested(request, key)
        if OPERATOR not in key.roles:
            raise HTTPException(403, f"{key.person} acts without the role {OPERATOR}")
        return key

    return operator


async def ensure_console_key(path: Path, settings: Settings | None = None) -> str:
    """Development (`make up`): the console's notifier key kept in `path` (mode 600), role operator,
    for the person each request names; a revoked one is replaced, never revived. Refused in prod."""
    settings = settings or Settings()
    if settings.environment == "prod":
        raise SystemExit("no development console key in prod: `consultctl notifier ops-key create --console`")
    key = kept_key(path, lambda: keys.new_key(PREFIX))
    client = connect(settings.mongodb_url, app_name="consultctl")
    try:
        store = OpsKeyStore(client[settings.database("notifier")])
        known = await store.stored(key)
        if known is not None and known.get("revoked"):
            key = kept_key(path, lambda: keys.new_key(PREFIX), renew=True)
        console = Holder(person=CONSOLE_SUBJECT, name=CONSOLE_NAME, roles=ROLES, delegates=True)
        await store.register(key, CONSOLE_SUBJECT, SystemClock().now(), console)
    finally:
        await client.close()
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.notifier.keys")
    parser.add_argument("command", choices=["ensure-console-key"])
    parser.add_argument("path", type=Path, help="the console's notifier key file")
    args = parser.parse_args(argv)
    asyncio.run(ensure_console_key(args.path))
    print(f"console notifier key (operator, for the person each request names): {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
