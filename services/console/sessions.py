"""Server-side sessions: the browser holds a random token, MongoDB the session under its hash.

The cookie carries 256 random bits; the session document's `_id` is their SHA-256, so a copy of the
database opens no session and every lookup is by `_id` (the only filter FerretDB pushes down). A
session ends when unused for the idle timeout, at the absolute timeout after sign-in, at sign-out,
and for every session of the person at "sign out everywhere" (the account's `sessions_valid_from`).

How a person proved who they are is one field, `method` (`password`, `password+totp`): an OIDC
sign-in (an organisation's directory) creates the same document with `method="oidc"` and the
issuer's subject in `idp`, after mapping it to an account; nothing else here changes (README).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

COOKIE = "console_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Tokens are 256-bit random: a plain SHA-256 stores them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Timeouts:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True)
class Session:
    session_id: str  # the token's hash
    person_id: str
    csrf: str
    created_at: datetime
    last_seen: datetime
    method: str = "password"
    idp: str | None = None  # OIDC: the issuer and subject the person signed in as

    def ended(self, now: datetime, timeouts: Timeouts, valid_from: datetime | None) -> str | None:
        """Why the session is over at `now` (`idle`, `absolute`, `everywhere`), or None if it runs."""
        if now - self.last_seen >= timeouts.idle:
            return "idle"
        if now - self.created_at >= timeouts.absolute:
            return "absolute"
        if valid_from is not None and self.created_at < valid_from:
            return "everywhere"
        return None

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


def new_session(person_id: str, method: str, now: datetime) -> tuple[str, Session]:
    """A fresh token (for the cookie) and the session stored under its hash."""
    token = new_token()
    session = Session(token_hash(token), person_id, secrets.token_urlsafe(24), now, now, method)
    return token, session


def signin_csrf(secret: str, nonce: str) -> str:
    """The sign-in form's token, before any session: an HMAC of a nonce kept in a cookie."""
    return hmac.new(secret.encode(), f"signin:{nonce}".encode(), hashlib.sha256).hexdigest()
