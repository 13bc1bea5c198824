"""One service's HTTP app: its lifespan (the runtime's), /healthz, /readyz, /metrics, /asyncapi.json,
the access log (R10), and the error answers (a database error is a 503 to retry, a body over the
limit a 413, anything else a JSON 500).

`Runtime.http_app` builds it; each service adds its routes to what it returns.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Gauge, make_asgi_app
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared import limits
from shared.access_log import AccessLog
from shared.asyncapi import asyncapi
from shared.httperrors import LastResort
from shared.settings import ServiceSettings

#: The probes' paths (deploy/cluster's compose file and Kubernetes manifests probe these) and the
#: metrics endpoint's.
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"


class Served(Protocol):
    """What the HTTP app needs of the runtime it serves."""

    name: str
    settings: ServiceSettings
    log: logging.Logger
    metrics: CollectorRegistry
    access: AccessLog

    def running(self) -> AbstractAsyncContextManager[Any]: ...

    async def readiness(self) -> dict[str, bool]: ...


def service_app(runtime: Served, *, title: str, version: str = "1.0.0", **kwargs: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running():
            yield

    app = FastAPI(title=title, version=version, lifespan=lifespan, **kwargs)
    app.state.runtime = runtime
    app.mount(METRICS_PATH, make_asgi_app(runtime.metrics))
    # What the last readiness check found, per check (broker, database, started) and overall ("ready"):
    # the probes (compose healthcheck, Kubernetes readinessProbe) ask every few seconds, so an alert
    # on it (deploy/observability/alerts.yml) sees a replica that stays unready.
    ready = Gauge(
        "consult_ready",
        "1 if the last /readyz found this check passing (check=ready: all of them), else 0",
        ["service", "check"],
        registry=runtime.metrics,
    )

    @app.get(HEALTH_PATH, tags=["ops"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @app.get("/asyncapi.json", tags=["ops"], summary="AsyncAPI document of this service's messages")
    async def asyncapi_document() -> dict[str, Any]:
        return asyncapi((runtime.name,))

    @app.get(READY_PATH, tags=["ops"], summary="Broker and database reachable")
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ok = all(checks.values())
        for check, passed in (*checks.items(), ("ready", ok)):
            ready.labels(runtime.name, check).set(1.0 if passed else 0.0)
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    runtime.access.install(app)

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DuplicateKeyError):  # a conflict no route handled: a defect, not an outage
            raise exc
        runtime.log.warning("%s %s: database error: %s", request.method, request.url.path, exc)
        body = {"error": "database-unavailable", "message": "the database did not answer; retry later"}
        return JSONResponse(body, 503, headers={"Retry-After": "1"})

    app.add_exception_handler(PyMongoError, database_unavailable)
    limits.limit_body(app, runtime.settings.max_body_bytes)  # 413 before a body is read
    app.add_middleware(LastResort, service=runtime.name)  # outermost: any other error, a JSON 500
    return app
