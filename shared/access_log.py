"""R10: every HTTP request a service answers (but its health, readiness and metrics routes) becomes an
`access.logged` event, written to the service's access outbox and published by its relay.

The middleware records the answer's status, or 500 when the app raised; it never delays the answer
(the record is written by a background task of the runtime, which shutdown waits for). It also gives
each request its id: the caller's `X-Request-Id` if it is plain printable ASCII, else one of ours,
answered in the same header.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

from fastapi import FastAPI, Request, Response

from shared.clock import Clock
from shared.events import AccessLogged, new_event
from shared.sealing import Sealer
from shared.store import outbox
from shared.store.outbox import OutboxRelay
from shared.text import is_clean, shown

#: runs a coroutine as a background task of the runtime, under the given name
Spawn = Callable[[Awaitable[Any], str], object]
#: routes whose requests leave no access record
UNRECORDED = ("/healthz", "/readyz", "/metrics")


def request_id(given: str | None) -> str:
    """The caller's X-Request-Id if it is plain printable ASCII (it is answered in a header, logged and
    published); otherwise one of ours."""
    if given and len(given) <= 100 and given.isascii() and is_clean(given):
        return given
    return uuid.uuid4().hex


@dataclass(frozen=True)
class AccessLog:
    """Writes the access record of each request to `relay`'s collection and pokes the relay."""

    service: str
    relay: OutboxRelay
    _: KW_ONLY
    clock: Clock
    sealer: Sealer
    spawn: Spawn
    log: logging.Logger

    def install(self, app: FastAPI) -> None:
        """Add the access-log middleware to `app` (inside any middleware added after it)."""

        @app.middleware("http")
        async def access_log(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            started = time.perf_counter()
            rid = request_id(request.headers.get("x-request-id"))
            request.state.request_id = rid

            def record(status: int) -> None:
                if request.url.path not in UNRECORDED:
                    self.spawn(self.record(request, status, started, rid), "access")

            try:
                response = await call_next(request)
            except Exception:  # the server answers 500: the access is recorded all the same
                record(500)
                raise
            record(response.status_code)
            response.headers["x-request-id"] = rid
            return response

    async def record(self, request: Request, status: int, started: float, request_id: str) -> None:
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        # from the request (a path parameter, a header): escaped to the text rules, so the access
        # record is kept whatever was sent (R10)
        actor = shown(str(getattr(request.state, "actor", None) or "anonymous"), 100)
        office = shown(str(getattr(request.state, "office_id", None) or "-"), 64)
        event = new_event(
            AccessLogged(
                service=self.service,
                actor=actor,
                credential=getattr(request.state, "credential", None),  # the key id, from our store
                method=request.method,
                route=template,
                status=status,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                request_id=request_id,
                at=self.clock.now(),
            ),
            office_id=office,
            producer=self.service,
            clock=self.clock,
        )
        try:
            await self.relay.collection.insert_one(
                {"_id": str(event.event_id), **outbox.new_document_fields([event], sealer=self.sealer)}
            )
            self.relay.poke(str(event.event_id))
        except Exception as exc:
            self.log.error("access record not stored: %s", exc)
