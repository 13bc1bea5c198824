"""Operations the CLI runs against the audit store: create auditor keys, run the retention job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.audit import auth, records, retention
from services.audit.config import Settings
from services.audit.crypto import Keys, Sealer
from services.audit.ingest import Appender
from services.audit.store import AuditStore
from shared.clock import Clock, SystemClock
from shared.mongo import connect


@asynccontextmanager
async def _opened(settings: Settings) -> AsyncIterator[tuple[AuditStore, Appender, Keys]]:
    client = connect(settings.mongodb_url, app_name="consultctl")
    try:
        store = AuditStore(client[settings.database("audit")])
        await store.ensure_indexes()
        keys = Keys.from_settings(settings)
        yield store, Appender(store, keys.chain, Sealer(keys.seal, keys.seal_id)), keys
    finally:
        await client.close()


async def create_key(
    settings: Settings, *, name: str, roles: list[str], by: str, clock: Clock | None = None
) -> str:
    """A new API key for an auditor or approver; the secret is shown once and stored only hashed."""
    unknown = set(roles) - auth.READERS
    if not roles or unknown:
        raise ValueError(f"roles must be among {sorted(auth.READERS)}")
    now = (clock or SystemClock()).now()
    token = auth.new_key()
    async with _opened(settings) as (store, appender, _):
        doc = auth.credential(token, name=name, roles=roles, now=now, created_by=by)
        await store.put_credential(doc)
        details = {"key_id": doc["_id"], "name": name, "roles": doc["roles"]}
        await appender.append(
            [records.internal("audit.credential_created", actor=by, details=details, now=now)]
        )
    return token


async def purge(settings: Settings, clock: Clock | None = None) -> list[retention.Purged]:
    """One retention pass, as the service runs it periodically."""
    now = (clock or SystemClock()).now()
    async with _opened(settings) as (store, appender, keys):

        async def submit(entry: records.Entry) -> None:
            await appender.append([entry])

        return await retention.purge(store, settings, now=now, key=keys.chain, submit=submit)
