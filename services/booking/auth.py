"""Who is calling: a portal key or an office staff key, sent as `Authorization: Bearer <key>`.

Keys are stored as hashes only. A portal acts for the offices its key names; a staff key for its
office. The credential names the actor in the access log (R10), never the key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.booking.store.access import Credential, CredentialStore

bearer = HTTPBearer(auto_error=False, description="portal key (cpk_...) or office staff key (csk_...)")


def authenticator(store: CredentialStore) -> Callable[..., Awaitable[Credential]]:
    async def credential(
        request: Request, auth: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Credential:
        key = auth.credentials if auth else request.headers.get("x-api-key")
        cred = await store.find(key) if key else None
        if cred is None:
            raise HTTPException(
                401, "a valid portal or staff key is required", {"WWW-Authenticate": "Bearer"}
            )
        request.state.actor = cred.actor
        return cred

    return credential


def for_office(request: Request, cred: Credential, office_id: str, *kinds: str) -> None:
    """The caller may act for this office (and is of one of these kinds); records the office for the log."""
    request.state.office_id = office_id
    if kinds and cred.kind not in kinds:
        raise HTTPException(403, f"this needs a {' or '.join(kinds)} key")
    if not cred.may_act_for(office_id):
        raise HTTPException(403, f"{cred.actor} may not act for {office_id}")
