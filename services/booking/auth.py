"""Who is calling: a portal key or an office staff key, sent as `Authorization: Bearer <key>`.

Keys are stored as hashes only. A portal acts for the offices its key names; a staff key for its
offices, as its person, with the role `staff`. The console's staff key acts only for the person a
request names (`X-Acting-Person`), with the roles and offices it asserts (`X-Acting-Roles`,
`X-Acting-Offices`; shared/acting.py). The access log names the person (or portal) as the actor and
the key by its id (R10), never the key itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.booking.store.access import OPERATOR, STAFF, Credential, CredentialStore
from shared.acting import as_requested

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
        return as_requested(request, cred)

    return credential


def for_office(request: Request, cred: Credential, office_id: str, *kinds: str) -> None:
    """The caller may act for this office (and is of one of these kinds); records the office for the log."""
    request.state.office_id = office_id
    if kinds and cred.kind not in kinds:
        raise HTTPException(403, f"this needs a {' or '.join(kinds)} key")
    if cred.kind == "staff" and STAFF not in cred.roles:
        raise HTTPException(403, f"{cred.actor} acts without the role {STAFF}")
    if not cred.may_act_for(office_id):
        raise HTTPException(403, f"{cred.actor} may not act for {office_id}")


def operator(credential: Callable[..., Awaitable[Credential]]) -> Callable[..., Awaitable[Credential]]:
    """Dependency: a staff key (or the console for a person) with the role `operator`; 403 else."""

    async def checked(request: Request) -> Credential:
        cred = await credential(request, await bearer(request))
        if cred.kind != "staff" or OPERATOR not in cred.roles:
            raise HTTPException(403, f"{cred.actor} acts without the role {OPERATOR}")
        return cred

    return checked
