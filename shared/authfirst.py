"""Who may call comes before what they sent (issue 8): a route class for routers with JSON bodies.

FastAPI resolves a route's dependencies (authentication, office and role checks) before it validates
the body and the query, so a caller who may not call gets 401/403 whatever it sent, as long as the
checks are dependencies. One case escapes: a body that is not JSON at all (with a JSON content type)
is answered 422 `json_invalid` before any dependency runs. `AuthFirstRoute` closes that: on such a
422 it runs the route again on a body that parses but that no body model accepts (a JSON string),
so the dependencies decide; a refused caller gets their 401/403/404, an allowed one the original 422.

Only for routes whose body is a pydantic model (or optional model): the probe body is a JSON string,
which such a body never accepts, so the endpoint itself never runs on it.

The body of such a route is read with `shared.safejson` (not FastAPI's plain `json.loads`): JSON nested
too deep, with lone surrogates, duplicate keys or out-of-range numbers is a 422 `json_invalid` naming
the field (and so also comes after the caller's checks), never a RecursionError or an answer that
cannot be encoded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from shared import safejson
from shared.text import shown

PROBE_BODY = b'"not a JSON object"'


def _malformed(exc: RequestValidationError) -> bool:
    return any(e.get("type") == "json_invalid" for e in exc.errors())


def _json(content_type: str | None) -> bool:
    media = (content_type or "application/json").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def _read_safely(request: Request) -> None:
    """Parse a JSON body with `safejson` and leave it where FastAPI looks for it (`request.json()`)."""
    body = await request.body()
    if not body or not _json(request.headers.get("content-type")):
        return
    try:
        request._json = safejson.loads(body)
    except safejson.UnsafeJson as exc:
        loc = ("body", *(shown(str(p), 100) for p in exc.path))  # a key from outside, escaped
        error = {"type": "json_invalid", "loc": loc, "msg": exc.message, "input": {}, "ctx": {}}
        raise RequestValidationError([error]) from None


class AuthFirstRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        reads_body = self.body_field is not None

        async def route(request: Request) -> Response:
            try:
                if reads_body:
                    await _read_safely(request)
                return await handler(request)
            except RequestValidationError as exc:
                if not _malformed(exc):
                    raise
                probe = Request(request.scope, request.receive)
                probe._body = PROBE_BODY  # the body the handler reads: parses, fits no model
                with contextlib.suppress(RequestValidationError):
                    await handler(probe)  # dependencies raise 401/403/404 for a refused caller
                raise exc from None

        return route
