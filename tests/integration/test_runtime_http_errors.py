"""The runtime's HTTP answers when a route fails: a database error is a 503 the caller can retry,
and every request, even one that ends in a 500, leaves its access record (R10)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pymongo.errors import AutoReconnect

from shared.runtime import Runtime
from shared.settings import ServiceSettings
from tests.integration.test_runtime_shutdown import QUEUES
from tests.support import event_sink, received, serve


async def test_r10_a_database_error_is_a_503_to_retry_and_a_crash_is_still_access_logged(
    make_settings: Callable[..., ServiceSettings],
) -> None:
    settings = make_settings(ServiceSettings, outbox_poll_seconds=600)
    runtime = Runtime(settings, QUEUES)
    app = runtime.http_app(title="probe")

    @app.get("/v1/database-down")
    async def database_down() -> None:
        raise AutoReconnect("connection pool paused")

    @app.get("/v1/defect")
    async def defect() -> None:
        raise RuntimeError("a defect")

    await runtime.declare()
    async with event_sink(settings.amqp_url, "access.logged") as sink:
        async with serve(app) as client:
            r = await client.get("/v1/database-down")
            assert r.status_code == 503
            assert r.json()["error"] == "database-unavailable"
            assert r.headers["Retry-After"] == "1"
            with pytest.raises(
                RuntimeError, match="a defect"
            ):  # the test client re-raises what a server answers 500
                await client.get("/v1/defect")
        logged = {e["payload"]["route"]: e["payload"]["status"] for e in await received(sink)}
    assert logged == {"/v1/database-down": 503, "/v1/defect": 500}
