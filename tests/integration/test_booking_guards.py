"""Hardened intake (issue 8) on the real service and FerretDB: HMAC-signed requests with a replay
window, and rate limits per portal key and per person (429 with Retry-After, then recovery) that hold
exactly under parallel requests (issue 14)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from examples import forms
from services.booking.signing import SIGNATURE, TIMESTAMP, sign, signing_secret
from services.booking.store.guards import WindowSlots
from tests.support import MONGODB_URL, CommandShapes
from tests.support.booking import KG, PORTAL_KEY, Harness, running

PATH = f"/v1/offices/{KG}/bookings"
AUTH = {"Authorization": f"Bearer {PORTAL_KEY}", "content-type": "application/json"}


def form(h: Harness, **fields: Any) -> bytes:
    day = h.now.date() + timedelta(days=2)  # Tue 24 Nov 2026, open at KG
    return json.dumps(forms.kg_form(h.policy(KG), day, h.now, **fields)).encode()


def signed(h: Harness, body: bytes, *, at: int | None = None, secret: str | None = None) -> dict[str, str]:
    stamp = str(at if at is not None else int(h.now.timestamp()))
    secret = secret or signing_secret(h.settings.secret_key, "dev-portal")
    return {TIMESTAMP: stamp, SIGNATURE: sign(secret, stamp, "POST", PATH, body)}


async def post(h: Harness, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    return await h.client.post(PATH, content=body, headers=AUTH | key | (headers or {}))


async def test_signed_portal_must_sign_and_cannot_replay(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with running(make_settings, amqp_url) as h:
        body = form(h)
        assert (await post(h, body)).status_code == 202  # not flagged: signing is optional
        service = h.client._transport.app.state.service  # type: ignore[attr-defined]
        assert await service.stores.credentials.require_signing("dev-portal") == 1

        unsigned = await post(h, form(h))
        assert unsigned.status_code == 401
        assert "must sign" in unsigned.json()["detail"]

        good = signed(h, body)
        assert (await post(h, body, good)).status_code == 202
        replay = await post(h, body, good)
        assert replay.status_code == 401
        assert "replay" in replay.json()["detail"]

        other = form(h)
        assert (await post(h, other, signed(h, body))).status_code == 401  # signature of another body
        assert (await post(h, other, signed(h, other, secret="wrong"))).status_code == 401
        now = int(h.now.timestamp())
        assert (await post(h, other, signed(h, other, at=now - 301))).status_code == 401  # too old
        assert (await post(h, other, signed(h, other, at=now + 301))).status_code == 401  # from the future
        assert (await post(h, other, signed(h, other, at=now - 299))).status_code == 202


async def test_setting_requires_every_portal_to_sign(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with running(make_settings, amqp_url, require_signed_requests=True) as h:
        body = form(h)
        assert (await post(h, body)).status_code == 401
        assert (await post(h, body, signed(h, body))).status_code == 202


async def test_rate_limit_per_portal_answers_429_then_recovers(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with running(make_settings, amqp_url, rate_limit_portal=3, rate_limit_person=0) as h:
        h.clock.set(h.now.replace(second=0, microsecond=0))  # the start of a 60 s window
        answers = [(await post(h, form(h))).status_code for _ in range(3)]
        assert answers == [202, 202, 202]
        limited = await post(h, form(h))
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "60"
        h.clock.advance(timedelta(seconds=45))
        assert (await post(h, form(h))).headers["Retry-After"] == "15"
        h.clock.advance(timedelta(seconds=15))  # the next window
        assert (await post(h, form(h))).status_code == 202


async def test_r09_rate_limit_per_person_counts_the_person_not_the_request(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with running(make_settings, amqp_url, rate_limit_person=2) as h:
        same = {"phone": "0154-22-9999", "email": "repeat@example.jp"}  # KG: identified by phone + email
        assert [(await post(h, form(h, **same))).status_code for _ in range(2)] == [202, 202]
        limited = await post(h, form(h, **same))
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) > 0
        assert (await post(h, form(h, phone="0154-22-8888", email="other@example.jp"))).status_code == 202
        h.clock.advance(timedelta(hours=1))
        assert (await post(h, form(h, **same))).status_code == 202


async def _fifty_at_once(h: Harness, bodies: list[bytes]) -> Counter[int]:
    return Counter(r.status_code for r in await asyncio.gather(*(post(h, b) for b in bodies)))


async def test_rate_limit_per_portal_holds_exactly_under_50_parallel_requests(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """50 requests at once against a limit of 20: exactly 20 through. (Counted with `$inc`, which
    FerretDB runs as an unisolated read-modify-write, parallel requests lost increments.)"""
    async with running(make_settings, amqp_url, rate_limit_portal=20, rate_limit_person=0) as h:
        answers = await _fifty_at_once(h, [form(h) for _ in range(50)])  # 50 different people
        assert answers == Counter({202: 20, 429: 30}), answers


async def test_r09_rate_limit_per_person_holds_exactly_under_50_parallel_requests(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with running(make_settings, amqp_url, rate_limit_portal=0, rate_limit_person=20) as h:
        same = {"phone": "0154-22-7777", "email": "burst@example.jp"}  # KG: identified by phone + email
        answers = await _fifty_at_once(h, [form(h, **same) for _ in range(50)])
        assert answers == Counter({202: 20, 429: 30}), answers


async def test_rate_limit_slots_hold_across_two_replicas_racing(db_prefix: str) -> None:
    """Two processes' slot counters (each hands out its own numbers) on one collection: 2 x 25 at once
    against a limit of 20 admit exactly 20, with inserts and `_id` lookups only (FerretDB decodes the
    whole collection for any other filter); the hourly sweep of ended windows is the one scan."""
    shapes = CommandShapes(("rate_limits",))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(MONGODB_URL, event_listeners=[shapes])
    collection = client[f"{db_prefix}booking"]["rate_limits"]
    replicas = [WindowSlots(collection, sweep_every=timedelta(hours=1)) for _ in range(2)]
    now = datetime(2026, 11, 22, 1, 0, 30, tzinfo=UTC)
    try:
        shapes.on = True
        hits = [r.admit("portal:p", 20, timedelta(seconds=60), now) for r in replicas for _ in range(25)]
        admitted = [ok for ok, _ in await asyncio.gather(*hits)]
        shapes.on = False
        assert admitted.count(True) == 20
        assert await collection.count_documents({}) == 20
        assert {q[0] for q in shapes.scans()} == {"delete"}, shapes.scans()
        later = await replicas[0].admit("portal:p", 20, timedelta(seconds=60), now + timedelta(seconds=30))
        assert later == (True, datetime(2026, 11, 22, 1, 2, tzinfo=UTC))  # the next window
    finally:
        await client.close()
