"""Body size limit (shared/limits.py): declared and streamed bodies over the limit are refused with 413."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request

from shared.limits import limit_body

LIMIT = 1000


def app() -> FastAPI:
    a = FastAPI()

    @a.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        return {"size": len(await request.body())}

    @a.post("/json")
    async def parsed(body: dict[str, Any]) -> dict[str, Any]:
        return {"keys": len(body)}

    @a.middleware("http")  # like Runtime.http_app's access log: runs the app in a task group
    async def passthrough(request: Request, call_next: Any) -> Any:
        return await call_next(request)

    limit_body(a, LIMIT)
    return a


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://t")


async def chunks(n: int, size: int = 300) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield b"x" * size


async def test_body_at_the_limit_passes() -> None:
    async with client() as c:
        r = await c.post("/echo", content=b"x" * LIMIT)
    assert r.status_code == 200, r.text
    assert r.json() == {"size": LIMIT}


async def test_declared_length_over_the_limit_is_413_before_reading() -> None:
    async with client() as c:
        r = await c.post("/echo", content=b"x" * (LIMIT + 1))
    assert r.status_code == 413
    assert r.json()["error"] == "too-large"


async def test_streamed_body_without_length_is_cut_at_the_limit() -> None:
    async with client() as c:
        small = await c.post("/echo", content=chunks(3))
        big = await c.post("/echo", content=chunks(4))
        parsed = await c.post("/json", content=chunks(10), headers={"content-type": "application/json"})
    assert small.status_code == 200, small.text
    assert small.json() == {"size": 900}
    assert big.status_code == 413, big.text
    assert parsed.status_code == 413, parsed.text
