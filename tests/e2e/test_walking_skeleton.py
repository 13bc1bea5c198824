"""A portal's booking request crosses the services and lands in the audit store."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import AUDITOR_KEY, Stack
from tests.support import eventually


async def test_booking_request_reaches_the_audit_store(stack: Stack) -> None:
    async with stack.client("booking") as booking:
        r = await booking.post(
            "/v1/offices/kushiro-gyosei/bookings",
            json={"windows": [{"start": "2026-12-01T10:00:00+09:00", "end": "2026-12-01T11:00:00+09:00"}]},
        )
        assert r.status_code == 202, r.text
        booking_id = r.json()["booking_id"]

    async with stack.client("audit", headers={"Authorization": f"Bearer {AUDITOR_KEY}"}) as audit:

        async def stored() -> list[dict[str, Any]]:
            r = await audit.get("/v1/audit/records", params={"booking_id": booking_id})
            return [rec for rec in r.json() if rec["type"] == "booking.requested"]

        records = await eventually(stored, what="booking.requested in the audit store")
    assert records[0]["office_id"] == "kushiro-gyosei"
    assert records[0]["producer"] == "booking"


async def test_every_service_reports_ready(stack: Stack) -> None:
    for service in stack.urls:
        async with stack.client(service) as c:
            assert (await c.get("/healthz")).json()["status"] == "ok"
            ready = (await c.get("/readyz")).json()
            assert ready == {"ready": True, "broker": True, "database": True, "started": True}
