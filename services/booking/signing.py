"""Optional HMAC request signing for portals (issue 8), checked on the intake route.

A portal signs `f"{timestamp}.{METHOD}.{path}.{sha256(body).hexdigest()}"` with HMAC-SHA256 under its
signing secret and sends `X-Signature-Timestamp: <unix seconds>` and `X-Signature: <hex>`. The path is
the request path with its query string, if any. A signature is refused when its timestamp is more
than `signature_window_seconds` (5 minutes) before or after our clock, when it does not match, or when
it was already used (replay; remembered in MongoDB for twice the window).

Signing is required when the setting `require_signed_requests` is on, or for a portal whose
credential carries `signed: true` (`CredentialStore.require_signing`); a portal that signs without
being required to is checked all the same. The signing secret is derived from SECRET_KEY and the
portal id (`signing_secret`), so nothing more is stored; rotating SECRET_KEY rotates every secret.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from fastapi import HTTPException, Request

from services.booking.store.access import Credential
from services.booking.store.guards import SeenSignatures
from shared.clock import Clock

TIMESTAMP = "X-Signature-Timestamp"
SIGNATURE = "X-Signature"


def signing_secret(secret_key: str, portal_id: str) -> str:
    """The portal's signing secret (hand it to the portal once; it is derived, not stored)."""
    return hmac.new(secret_key.encode(), f"portal-signing:{portal_id}".encode(), hashlib.sha256).hexdigest()


def canonical(timestamp: str, method: str, path: str, body: bytes) -> bytes:
    return f"{timestamp}.{method.upper()}.{path}.{hashlib.sha256(body).hexdigest()}".encode()


def sign(secret: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    return hmac.new(secret.encode(), canonical(timestamp, method, path, body), hashlib.sha256).hexdigest()


def _refuse(why: str) -> HTTPException:
    return HTTPException(401, f"request signature refused: {why}", {"WWW-Authenticate": "Signature"})


class Signatures:
    def __init__(
        self, secret_key: str, seen: SeenSignatures, clock: Clock, *, window: timedelta, required: bool
    ) -> None:
        self.secret_key = secret_key
        self.seen = seen
        self.clock = clock
        self.window = window
        self.required = required

    async def check(self, request: Request, cred: Credential) -> None:
        stamp, given = request.headers.get(TIMESTAMP), request.headers.get(SIGNATURE)
        if stamp is None and given is None:
            if self.required or cred.signed:
                raise _refuse(f"this portal must sign its requests ({TIMESTAMP}, {SIGNATURE})")
            return
        if not stamp or not given:
            raise _refuse(f"both {TIMESTAMP} and {SIGNATURE} are needed")
        try:
            at = datetime.fromtimestamp(int(stamp), UTC)
        except (ValueError, OverflowError, OSError):
            raise _refuse("the timestamp is not unix seconds") from None
        now = self.clock.now()
        if abs(now - at) > self.window:
            raise _refuse("the timestamp is outside the replay window")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        secret = signing_secret(self.secret_key, cred.subject)
        expected = sign(secret, stamp, request.method, path, await request.body())
        if not hmac.compare_digest(expected, given.strip().lower()):
            raise _refuse("the signature does not match")
        if not await self.seen.first_time(f"{cred.subject}:{expected}", now, 2 * self.window):
            raise _refuse("this signature was already used (replay)")
