"""Who may call comes before what they sent (issue 8): a route class for routers with JSON bodies.

FastAPI resolves a route's dependencies (authentication, office and role checks) before it validates
the body and the query, so a caller who may not call gets 401/403 whatever it sent, as long as the
checks are dependencies. One case escapes: a body that is not JSON at all (with a JSON content type)
is answered 422 `json_invalid` before any dependency runs. `AuthFirstRoute` closes that: on such a
422 it runs the route again on a body that parses but that no body model accepts (a JSON string),
so the dependencies decide; a refused caller gets their 401/403/404, an allowed one the original 422.

Only for routes whose body is a pydantic model (or optional model): the probe body is a JSON string,
which such a body never accepts, so the endpoint itself never runs on it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

PROBE_BODY = b'"not a JSON object"'


def _malformed(exc: RequestValidationError) -> bool:
    return any(e.get("type") == "json_invalid" for e in exc.errors())


class AuthFirstRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
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
