"""The intake route's guard (issue 8): office and kind of key, request signature, rate limits.

A FastAPI dependency, so it runs before the route reads the form; it reads the body itself (the
route gets the same, cached, request body).
"""

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request

from services.booking.auth import for_office
from services.booking.config import Settings
from services.booking.crypto import Vault
from services.booking.domain import InvalidFields
from services.booking.ratelimit import RateLimits
from services.booking.signing import Signatures
from services.booking.store.access import Credential
from services.booking.store.guards import SeenSignatures, WindowSlots
from shared import safejson
from shared.clock import Clock
from shared.commands import FIELD_RULES, FieldError

Guard = Callable[..., Awaitable[None]]


async def json_body(request: Request) -> Any:
    """The body, read once with `safejson`: JSON that is not, or is too deep, has lone surrogates or
    duplicate keys… raises InvalidFields naming the field and its rule (the route answers 422)."""
    if not hasattr(request.state, "json_body"):
        try:
            request.state.json_body = safejson.loads(await request.body())
        except safejson.UnsafeJson as exc:
            top = str(exc.path[0]) if exc.path else ""
            error = FieldError(field=exc.field, message=exc.message, rule=FIELD_RULES.get(top, "R02"))
            request.state.json_body = InvalidFields([error])
    if isinstance(request.state.json_body, InvalidFields):
        raise request.state.json_body
    return request.state.json_body


def intake_guard(signatures: Signatures, limits: RateLimits, credential: Any) -> Guard:
    async def guard(
        office_id: str, request: Request, cred: Annotated[Credential, Depends(credential)]
    ) -> None:
        for_office(request, cred, office_id, "portal")
        await signatures.check(request, cred)
        try:
            body = await json_body(request)
        except InvalidFields:
            body = None  # the route answers 422
        await limits.check(cred, office_id, body)

    return guard


def rate_limits(settings: Settings, db: Any, clock: Clock, vault: Vault) -> RateLimits:
    """The intake's rate limits with their MongoDB state, shared by HTTP and AMQP intake."""
    portal = (settings.rate_limit_portal, timedelta(seconds=settings.rate_limit_portal_window_seconds))
    person = (settings.rate_limit_person, timedelta(seconds=settings.rate_limit_person_window_seconds))
    counters = WindowSlots(db["rate_limits"], sweep_every=max(portal[1], person[1]))
    return RateLimits(counters, clock, settings.policies(), vault, portal=portal, person=person)


def build(settings: Settings, db: Any, clock: Clock, limits: RateLimits, credential: Any) -> Guard:
    """The guard with its MongoDB state (`db` is the service's AsyncDatabase)."""
    window = timedelta(seconds=settings.signature_window_seconds)
    seen = SeenSignatures(db["seen_signatures"], sweep_every=window)
    signatures = Signatures(
        settings.secret_key, seen, clock, window=window, required=settings.require_signed_requests
    )
    return intake_guard(signatures, limits, credential)
