"""Operations the CLI runs against the audit store: create and revoke auditor keys, keep the
development console's key, run the retention job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.audit import auth, records, retention
from services.audit.config import Settings
from services.audit.crypto import Keys, Sealer
from services.audit.ingest import Appender
from services.audit.store import AuditStore
from shared.acting import person_for
from shared.clock import Clock, SystemClock
from shared.keyfile import kept_key
from shared.mongo import Doc, connect

#: the development console's credential (`make up`): every role, for the person each request names
CONSOLE_NAME, CONSOLE_PERSON = "開発用コンソール", "dev-console"


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


def _shown(doc: Doc) -> Doc:
    """What the audit trail keeps of a credential: never its secret's hash."""
    keys = ("name", "person", "roles", "delegates")
    return {"key_id": doc["_id"], **{k: doc[k] for k in keys if k in doc}}


async def create_key(
    settings: Settings,
    *,
    name: str,
    roles: list[str],
    by: str,
    person: str | None = None,
    console: bool = False,
    clock: Clock | None = None,
    token: str | None = None,
) -> str:
    """A new API key (or `token`) for an auditor or approver, held by `person` (default: derived from
    the name; shared/acting.py), or with `console` the console's key, which acts for the person each
    request names. The secret is shown once and stored only hashed."""
    unknown = set(roles) - auth.ROLES
    if not roles or unknown:
        raise ValueError(f"roles must be among {sorted(auth.ROLES)}")
    who = person_for(person, name)
    now = (clock or SystemClock()).now()
    token = token or auth.new_key()
    doc = auth.credential(
        token, name=name, roles=roles, now=now, created_by=by, person=who, delegates=console
    )
    async with _opened(settings) as (store, appender, _):
        await store.put_credential(doc)
        await appender.append(
            [records.internal("audit.credential_created", actor=by, details=_shown(doc), now=now)]
        )
    return token


async def revoke_key(settings: Settings, key_id: str, *, by: str, clock: Clock | None = None) -> Doc | None:
    """Revoke a key: from now on it opens nothing (401), recorded as `audit.credential_revoked`.
    The credential as it was, or None when there is no such active key."""
    now = (clock or SystemClock()).now()
    async with _opened(settings) as (store, appender, _):
        doc = await store.credential(key_id)
        if doc is None or not await store.revoke_credential(key_id, now, by):
            return None
        await appender.append(
            [records.internal("audit.credential_revoked", actor=by, details=_shown(doc), now=now)]
        )
    return doc


async def ensure_console_key(path: Path, settings: Settings | None = None) -> str:
    """Development (`make up`): the console's key kept in `path` (mode 600), registered with the
    roles auditor, disclosure-approver and operator for the person each request names; made anew
    when missing or revoked (a key kept from before the role operator keeps its roles: revoke it
    for a new one). Refused in prod."""
    settings = settings or Settings()
    if settings.environment == "prod":
        raise SystemExit("no development console key in prod: `consultctl audit create-key --console`")
    token = kept_key(path, auth.new_key)
    async with _opened(settings) as (store, _, _):
        doc = await store.credential(auth.split(token)[0])
    if doc is not None and doc.get("active"):
        return token
    if doc is not None:  # revoked: the console gets a new key, the revoked one stays revoked
        token = kept_key(path, auth.new_key, renew=True)
    roles = sorted(auth.ROLES)
    await create_key(
        settings,
        name=CONSOLE_NAME,
        roles=roles,
        by="make up",
        person=CONSOLE_PERSON,
        console=True,
        token=token,
    )
    return token


async def purge(settings: Settings, clock: Clock | None = None) -> list[retention.Purged]:
    """One retention pass, as the service runs it periodically."""
    now = (clock or SystemClock()).now()
    async with _opened(settings) as (store, appender, keys):

        async def submit(entry: records.Entry) -> None:
            await appender.append([entry])

        return await retention.purge(store, settings, now=now, key=keys.chain, submit=submit)
