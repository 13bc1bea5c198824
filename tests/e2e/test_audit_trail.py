"""The audit trail of the running system: device logs pseudonymised, access logs of every API,
auditor-only reads, and a chain that verifies from the API and from consultctl (R10, R11)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika

from services.audit.config import Settings as AuditSettings
from services.audit.crypto import Keys, Pseudonymiser
from shared import topology
from shared.clock import SystemClock
from shared.events import DeviceRecorded, new_event
from tests.support import eventually
from tests.support.stack import AUDITOR_KEY, ROOT, Stack

AUDITOR = {"Authorization": f"Bearer {AUDITOR_KEY}"}


async def publish_device_event(stack: Stack, booking_id: str) -> None:
    """As the booking service does when a portal sends device identification with a booking."""
    payload = DeviceRecorded(
        booking_id=booking_id, portal_id="kg-portal", user_agent="Mozilla/5.0 (e2e) Teams/1.6",
        ip_address="203.0.113.77", device_id="DEV-E2E-0001", app_version="1.6", observed_at=datetime.now(UTC),
    )  # fmt: skip
    event = new_event(payload, office_id="kushiro-gyosei", producer="booking", clock=SystemClock())
    connection = await aio_pika.connect(stack.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.EVENTS)
        await exchange.publish(aio_pika.Message(event.to_json(), message_id=str(event.event_id)), event.type)


async def test_r11_device_logs_are_stored_pseudonymised_and_readable_by_auditors_only(stack: Stack) -> None:
    booking_id = f"e2e-{uuid.uuid4().hex[:8]}"
    await publish_device_event(stack, booking_id)
    async with stack.client("audit") as audit:
        assert (await audit.get("/v1/audit/records", params={"booking_id": booking_id})).status_code == 401
        wrong = {"Authorization": "Bearer cpk-portal.not-an-auditor"}
        assert (await audit.get("/v1/audit/records", headers=wrong)).status_code == 401

        async def stored() -> list[dict[str, Any]]:
            r = await audit.get("/v1/audit/records", params={"booking_id": booking_id}, headers=AUDITOR)
            return list(r.json())

        [record] = await eventually(stored, what="device.recorded in the audit store")
    assert record["kind"] == "device" and record["device_key"] and record["ip_key"]
    text = json.dumps(record)
    assert "DEV-E2E-0001" not in text and "203.0.113.77" not in text


async def test_r10_access_to_other_services_apis_is_recorded(stack: Stack) -> None:
    """With the client's address and User-Agent, as pseudonyms; a proxy header from an address that
    is not a configured proxy (here 127.0.0.1, which uvicorn would believe by default) is ignored."""
    agent = f"E2EBrowser/{uuid.uuid4().hex[:8]}"
    sent = {"User-Agent": agent, "X-Forwarded-For": "198.51.100.99"}
    async with stack.client("booking") as booking:
        r = await booking.get(f"/v1/bookings/{uuid.uuid4().hex}", headers=sent)
        request_id = r.headers["x-request-id"]
    async with stack.client("audit", headers=AUDITOR) as audit:

        async def logged() -> list[dict[str, Any]]:  # every page: earlier tests may have filled the first
            found: list[dict[str, Any]] = []
            params = {"type": "access.logged", "kind": "access", "limit": "500"}
            while True:
                r = await audit.get("/v1/audit/records", params=params)
                found += [x for x in r.json() if x["payload"]["request_id"] == request_id]
                if not (cursor := r.headers.get("x-next-cursor")):
                    return found
                params["cursor"] = cursor

        [record] = await eventually(logged, what="booking's access log in the audit store")
    assert record["producer"] == "booking" and record["payload"]["route"] == "/v1/bookings/{booking_id}"
    pseudonymise = Pseudonymiser(Keys.from_settings(AuditSettings()).pseudonym)  # the stack's environment
    assert record["ip_key"] == pseudonymise("ip", "127.0.0.1") != pseudonymise("ip", "198.51.100.99")
    assert record["ua_key"] == pseudonymise("ua", agent) and agent not in json.dumps(record)


async def test_audit_chains_verify_in_the_running_system(stack: Stack) -> None:
    async with stack.client("audit", headers=AUDITOR) as audit:
        report = (await audit.get("/v1/audit/verify")).json()
    assert report["ok"], report["first_problem"]
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "ops.cli", "audit", "verify"], cwd=ROOT, env=stack.env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chain verified" in done.stdout
