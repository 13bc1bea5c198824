"""The last answer of every service's HTTP app: an error no handler took is a JSON 500 that keeps the
connection protocol right.

Starlette's ServerErrorMiddleware answers such an error with a plain-text 500 and raises it again;
uvicorn then closes the connection although the answer did not announce it (no `Connection: close`),
so a pooled client's next request on that connection got no answer. `LastResort`, outermost, answers
the error itself: a JSON body, `Connection: close` (the server closes after the answer, as announced:
a connection whose request failed midway, its body perhaps unread, is not reused), the traceback in the
log, nothing raised further. An error after the answer has started cannot be answered any more; it is
raised, so the server cuts the connection and the client sees a truncated answer, never a wrong one.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.asgi import Tracking, send_json

BODY = json.dumps(
    {"error": "internal", "message": "the service failed on this request; the error is logged"}
).encode()


class LastResort:
    def __init__(self, app: ASGIApp, service: str = "service") -> None:
        self.app = app
        self.log = logging.getLogger(f"consult.{service}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracking = Tracking(send)
        try:
            await self.app(scope, receive, tracking)
        except Exception:
            if tracking.started:
                raise
            self.log.exception("%s %s: unhandled error, answered 500", scope.get("method"), scope.get("path"))
            await send_json(send, 500, BODY, _headers(scope))


def _headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    headers = [(b"connection", b"close")]
    request_id = (scope.get("state") or {}).get("request_id")
    if isinstance(request_id, str):
        headers.append((b"x-request-id", request_id.encode("latin-1", "replace")))
    return headers
