"""Request body size limit for every service's HTTP app (pure ASGI, so nothing is buffered first).

A declared Content-Length over the limit is answered 413 before anything else runs (no auth, no
route). A body without a declared length (chunked) is counted as it streams by Starlette's
RequestBodyLimitMiddleware, which FastAPI's routes recognise, and cut off with 413 once it passes
the limit.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.asgi import Tracking, send_json

DEFAULT_MAX_BODY_BYTES = 256 * 1024


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps({"error": "too-large", "message": f"the request body exceeds {limit} bytes"}).encode()
    await send_json(send, 413, body)


def _too_large(exc: BaseException) -> bool:
    """The limit's error, possibly wrapped in exception groups by middleware task groups."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_too_large(e) for e in exc.exceptions)
    return isinstance(exc, HTTPException) and exc.status_code == 413


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies larger than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = RequestBodyLimitMiddleware(app, max_body_size=max_bytes)
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > self.max_bytes
        except ValueError:
            too_big = False  # the HTTP server refuses a malformed length itself
        if too_big:
            await _reject(send, self.max_bytes)
            return
        tracking = Tracking(send)
        try:
            await self.app(scope, receive, tracking)
        except BaseException as exc:
            if tracking.started or not _too_large(exc):
                raise
            await _reject(send, self.max_bytes)  # a route read the body itself (request.json())


def limit_body(app: Any, max_bytes: int) -> None:
    """Install the limit on a FastAPI/Starlette app (outermost, before any body is read)."""
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)
