"""The runtime's HTTP answers when a route fails: a database error is a 503 the caller can retry, any
other error a JSON 500 that keeps the connection protocol right (`shared/httperrors.py`), and every
request, even one that ends in a 500, leaves its access record (R10)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from pymongo.errors import AutoReconnect

from shared.runtime import Runtime
from shared.settings import ServiceSettings
from tests.integration.test_runtime_shutdown import QUEUES
from tests.support import event_sink, received, serve, uvicorn_serving


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
            r = await client.get("/v1/defect")
            assert r.status_code == 500
            assert r.json()["error"] == "internal"
            assert "a defect" not in r.text  # the traceback is logged, not answered
        logged = {e["payload"]["route"]: e["payload"]["status"] for e in await received(sink)}
    assert logged == {"/v1/database-down": 503, "/v1/defect": 500}


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def test_r10_a_500_keeps_the_connection_protocol_right_for_a_pooled_client(
    make_settings: Callable[..., ServiceSettings],
) -> None:
    """Over a real HTTP/1.1 connection: after the 500 the server either keeps answering on the same
    connection or said `Connection: close` before closing it; a pooled client's next request is
    answered. (Before: a text 500 without `Connection: close`, then the server hung up.)"""
    settings = make_settings(ServiceSettings, outbox_poll_seconds=600)
    runtime = Runtime(settings, QUEUES)
    app = runtime.http_app(title="probe")

    @app.post("/v1/defect")
    async def defect() -> None:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    @app.get("/v1/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    await runtime.declare()
    async with uvicorn_serving(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as pooled:
            bad = await pooled.post("/v1/defect", content=b'{"unread": "body"}')
            assert bad.status_code == 500
            assert bad.headers["content-type"] == "application/json"
            assert bad.json()["error"] == "internal"
            for _ in range(3):
                assert (await pooled.get("/v1/ping")).json() == {"pong": "yes"}

        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"POST /v1/defect HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            status, headers, _ = await _answer(reader)
            assert status == 500
            writer.write(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            if headers.get("connection", "").lower() == "close":
                assert await reader.read() == b""  # announced, then closed: the client knows
            else:
                status, _, body = await asyncio.wait_for(_answer(reader), 10)
                assert (status, body) == (200, b'{"pong":"yes"}')
        finally:
            writer.close()
