"""Auditor credentials: API keys `<key id>.<secret>`, stored as a SHA-256 of the secret.

Only the roles `auditor` and `disclosure-approver` open the audit API (R11); a portal's or staff
member's key, even one stored here, is refused. Secrets are 256-bit random, so a plain hash is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from fastapi import HTTPException, Request

from services.audit.store import AuditStore
from shared.mongo import Doc

AUDITOR = "auditor"
APPROVER = "disclosure-approver"
READERS = frozenset({AUDITOR, APPROVER})


@dataclass(frozen=True)
class Caller:
    key_id: str
    name: str
    roles: frozenset[str]


def new_key(prefix: str = "ak") -> str:
    return f"{prefix}-{secrets.token_hex(6)}.{secrets.token_urlsafe(32)}"


def split(token: str) -> tuple[str, str]:
    key_id, dot, secret = token.strip().partition(".")
    if not dot or not key_id or not secret:
        raise ValueError("an API key reads `<key id>.<secret>`")
    return key_id, secret


def credential(token: str, *, name: str, roles: list[str], now: datetime, created_by: str) -> Doc:
    key_id, secret = split(token)
    return {
        "_id": key_id,
        "name": name,
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


async def authenticate(store: AuditStore, token: str | None) -> Caller | None:
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
    return Caller(key_id, doc.get("name", key_id), frozenset(doc.get("roles", [])))


def requires(store: AuditStore, *roles: str) -> Callable[[Request], Awaitable[Caller]]:
    """FastAPI dependency: the caller, if it holds one of the roles; 401 without a valid key, 403 else."""
    allowed = frozenset(roles or READERS)

    async def dependency(request: Request) -> Caller:
        caller = await authenticate(store, _token(request))
        if caller is None:
            raise HTTPException(401, "an auditor API key is required", headers={"WWW-Authenticate": "Bearer"})
        request.state.actor = caller.key_id  # the access log names who read (R10)
        request.state.office_id = "-"
        if not caller.roles & allowed:
            raise HTTPException(403, f"this key lacks the role: {' or '.join(sorted(allowed))}")
        return caller

    return dependency
