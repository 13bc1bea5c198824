"""Booking refuses a caller before it looks at what the caller sent (issue 8).

A caller without a key, with a key of the wrong kind or of another office gets 401/403 (or the 404
that hides another portal's booking) whatever the body or query: never the 422 that would describe
the schema to someone who may not call. A caller who may call still gets 422 for the same input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from examples import forms
from tests.support.booking import HW, KG, PORTAL_KEY, STAFF_KEY, Harness, running

HW_STAFF_KEY = "csk_auth-order-hw-staff-0123456789abcdefghijklmnopq"
BAD_BODIES: dict[str, Any] = {
    "schema": {"how": "teleported", "unknown": 1},
    "not JSON": b"{not json",
    "empty": b"",
}


async def call(h: Harness, method: str, path: str, key: str | None, body: Any) -> httpx.Response:
    headers = {"content-type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await h.client.request(method, path, content=content, headers=headers)


@pytest.fixture
async def h(make_settings: Callable[..., Any], amqp_url: str) -> Any:
    async with running(make_settings, amqp_url) as harness:
        service = harness.client._transport.app.state.service  # type: ignore[attr-defined]
        await service.stores.credentials.register(HW_STAFF_KEY, "staff", "hw-desk", [HW], harness.now)
        yield harness


async def booked(h: Harness) -> str:
    r = await h.book(KG, forms.kg_form(h.policy(KG), h.now.date() + timedelta(days=2), h.now))
    assert r.status_code == 202, r.text
    return str(r.json()["booking_id"])


@pytest.mark.parametrize("bad", sorted(BAD_BODIES))
async def test_wrong_caller_with_a_bad_body_is_refused_not_validated(h: Harness, bad: str) -> None:
    booking_id = await booked(h)
    body = BAD_BODIES[bad]
    routes = [
        ("POST", f"/v1/bookings/{booking_id}/attendance"),
        ("POST", f"/v1/bookings/{booking_id}/identity-check"),
        ("POST", f"/v1/bookings/{booking_id}/completion"),
        ("POST", f"/v1/bookings/{booking_id}/refusal"),
        ("POST", f"/v1/bookings/{booking_id}/cancellations"),
        ("POST", f"/v1/offices/{KG}/bookings"),
    ]
    wrong = []
    for method, path in routes:
        callers = {"no key": (None, 401), "staff of another office": (HW_STAFF_KEY, 403)}
        if "/bookings/" in path and not path.endswith("/cancellations"):
            callers["portal on a staff route"] = (PORTAL_KEY, 403)
        if path.endswith(f"{KG}/bookings"):
            callers["staff on the intake"] = (STAFF_KEY, 403)
        for who, (key, expected) in callers.items():
            r = await call(h, method, path, key, body)
            if r.status_code != expected:
                wrong.append(f"{who:25} {method} {path} -> {r.status_code} {r.text[:120]}")
    assert not wrong, "\n".join(wrong)


async def test_wrong_caller_with_a_bad_query_is_refused_not_validated(h: Harness) -> None:
    path = f"/v1/offices/{KG}/bookings?status=teleported&limit=0&from=yesterday"
    for key, expected in ((None, 401), (PORTAL_KEY, 403), (HW_STAFF_KEY, 403)):
        r = await call(h, "GET", path, key, b"")
        assert r.status_code == expected, (key, r.status_code, r.text)
    assert (await call(h, "GET", path, STAFF_KEY, b"")).status_code == 422  # allowed: told what's wrong


async def test_allowed_caller_still_gets_the_validation_errors(h: Harness) -> None:
    booking_id = await booked(h)
    for bad in ("schema", "not JSON"):
        r = await call(h, "POST", f"/v1/bookings/{booking_id}/attendance", STAFF_KEY, BAD_BODIES[bad])
        assert r.status_code == 422, r.text
    not_json = await call(h, "POST", f"/v1/bookings/{booking_id}/attendance", STAFF_KEY, b"{not json")
    assert not_json.json()["detail"][0]["type"] == "json_invalid"
    r = await call(h, "POST", f"/v1/bookings/{booking_id}/cancellations", PORTAL_KEY, {"channel": "pigeon"})
    assert r.status_code == 422, r.text
