"""Auditor credentials: API keys `<key id>.<secret>`, stored as a SHA-256 of the secret.

Only the roles `auditor` and `disclosure-approver` open the audit API (R11); a portal's or staff
member's key, even one stored here, is refused. Secrets are 256-bit random, so a plain hash is enough.
Each credential names its `person` (one person may hold several keys; a credential stored without
one is its own person, the key id); the console's credential (`delegates`) acts only for the person
each request names (`shared/acting.py`). A revoked credential (`active: false`) opens nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from fastapi import HTTPException, Request

from services.audit.store import AuditStore
from shared.acting import OPERATOR, Refusal, acting, http_error
from shared.mongo import Doc

AUDITOR = "auditor"
APPROVER = "disclosure-approver"
READERS = frozenset({AUDITOR, APPROVER})
#: OPERATOR may replay audit's parked messages (it opens no record)
ROLES = READERS | {OPERATOR}


@dataclass(frozen=True)
class Caller:
    """Who calls: the key, and `who`, the person behind it (for the console's key, the person it
    acts for). Four eyes and the audit trail go by `who` (R11)."""

    key_id: str
    name: str
    roles: frozenset[str]
    who: str = ""

    def __post_init__(self) -> None:
        if not self.who:
            object.__setattr__(self, "who", self.key_id)  # stored before persons: its own person


def new_key(prefix: str = "ak") -> str:
    return f"{prefix}-{secrets.token_hex(6)}.{secrets.token_urlsafe(32)}"


def split(token: str) -> tuple[str, str]:
    key_id, dot, secret = token.strip().partition(".")
    if not dot or not key_id or not secret:
        raise ValueError("an API key reads `<key id>.<secret>`")
    return key_id, secret


def credential(
    token: str,
    *,
    name: str,
    roles: list[str],
    now: datetime,
    created_by: str,
    person: str | None = None,
    delegates: bool = False,
) -> Doc:
    key_id, secret = split(token)
    return {
        "_id": key_id,
        "name": name,
        "person": person or key_id,
        "delegates": delegates,
        "roles": sorted(roles),
        "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
        "active": True,
        "created_at": now,
        "created_by": created_by,
    }


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


async def authenticate(store: AuditStore, token: str | None) -> Doc | None:
    """The credential a valid, unrevoked key opens, else None."""
    if not token:
        return None
    try:
        key_id, secret = split(token)
    except ValueError:
        return None
    doc = await store.credential(key_id)
    presented = hashlib.sha256(secret.encode()).hexdigest()
    if doc is None or not doc.get("active") or not hmac.compare_digest(presented, doc["secret_sha256"]):
        return None
    return doc


def caller_of(doc: Doc, headers: Iterable[tuple[str, str]]) -> Caller:
    """The caller a credential makes of a request: its own person and roles, or, for the console's
    credential, the person and the roles the request asserts (Refusal otherwise)."""
    roles = frozenset(doc.get("roles", []))
    key_id = str(doc["_id"])
    act = acting(headers, delegates=bool(doc.get("delegates")), roles=roles)
    if act is None:
        return Caller(key_id, doc.get("name", key_id), roles, str(doc.get("person") or key_id))
    return Caller(key_id, doc.get("name", key_id), act.roles, act.person)


def requires(store: AuditStore, *roles: str) -> Callable[[Request], Awaitable[Caller]]:
    """FastAPI dependency: the caller, if it holds one of the roles; 401 without a valid key, 403 else."""
    allowed = frozenset(roles or READERS)

    async def dependency(request: Request) -> Caller:
        doc = await authenticate(store, _token(request))
        if doc is None:
            raise HTTPException(401, "an auditor API key is required", headers={"WWW-Authenticate": "Bearer"})
        request.state.credential = doc["_id"]
        request.state.actor = doc.get("person") or doc["_id"]  # until the console's person is known
        request.state.office_id = "-"
        try:
            caller = caller_of(doc, request.headers.items())
        except Refusal as exc:
            raise http_error(exc) from exc
        request.state.actor = caller.who  # the access log names the person who read (R10)
        if not caller.roles & allowed:
            raise HTTPException(403, f"this key lacks the role: {' or '.join(sorted(allowed))}")
        return caller

    return dependency
