"""A portal's booking request crosses the services and lands in the audit store."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from examples import forms
from services.booking.config import Settings
from shared.calendar import OfficeCalendar
from shared.clock import SystemClock
from tests.support import eventually
from tests.support.stack import AUDITOR_KEY, PORTAL_KEY, Stack


async def test_booking_request_reaches_the_audit_store(stack: Stack) -> None:
    policy = Settings().policies()["kushiro-gyosei"]
    now = SystemClock().now()
    day = OfficeCalendar(policy).first_bookable(now + timedelta(days=1))
    async with stack.client("booking", headers={"Authorization": f"Bearer {PORTAL_KEY}"}) as booking:
        r = await booking.post("/v1/offices/kushiro-gyosei/bookings", json=forms.kg_form(policy, day, now))
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
