"""R10 usage records against the real servers: whose address and User-Agent each access record holds
(behind the trusted proxies only), the consultation's actual usage window, and R11: auditors read
them only as pseudonyms, and only a legal disclosure opens them."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest

from examples import records
from shared.clock import JST
from shared.events import MeetingJoined
from tests.integration.test_audit_disclosure import request_body
from tests.integration.test_booking_lifecycle import confirmed, kg_booking, scheduler_says
from tests.support import asgi_client, eventually
from tests.support.audit import APPROVER_KEY, AUDITOR_KEY, Audit, auth, running_audit
from tests.support.booking import running

AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AuditTest/16.10"


@pytest.fixture
async def audit(make_settings: Callable[..., Any]) -> AsyncIterator[Audit]:
    async with running_audit(make_settings, trusted_proxies=["10.0.0.0/8"]) as a:
        yield a


async def read_records(audit: Audit, peer: str, agent: str = AGENT, **headers: str) -> str:
    """One auditor's search, from `peer`; returns the request id its access record carries."""
    rid = uuid.uuid4().hex
    async with asgi_client(audit.app, (peer, 50123)) as http:
        sent = {**auth(), "User-Agent": agent, "X-Request-Id": rid, **headers}
        r = await http.get("/v1/audit/records", params={"booking_id": "none"}, headers=sent)
    assert r.status_code == 200, r.text
    return rid


async def access_record(audit: Audit, rid: str) -> dict[str, Any]:
    async def stored() -> dict[str, Any] | None:
        return await audit.service.store.records.find_one({"payload.request_id": rid})

    return await eventually(stored, what=f"the access record of request {rid}")


async def test_r10_access_record_holds_sealed_client_ip_and_user_agent(audit: Audit) -> None:
    record = await access_record(audit, await read_records(audit, "198.51.100.40"))
    assert record["kind"] == "access" and record["sealed"] is True
    assert record["ip_key"] == audit.service.pseudonymise("ip", "198.51.100.40")
    assert record["ua_key"] == audit.service.pseudonymise("ua", AGENT)
    sealed = await audit.service.store.sealed.find_one({"_id": record["_id"]})
    assert sealed is not None
    assert audit.service.sealer.open(sealed, record["_id"]) == {
        "ip_address": "198.51.100.40",
        "user_agent": AGENT,
    }
    everything = json.dumps(await audit.service.store.records.find({}).to_list(), default=str)
    assert "198.51.100.40" not in everything and "AuditTest" not in everything  # R11: pseudonyms only


async def test_r10_forwarded_for_is_trusted_only_from_configured_proxies(audit: Audit) -> None:
    forwarded = {"X-Forwarded-For": "192.0.2.66, 198.51.100.41"}
    via_proxy = await read_records(audit, "10.1.2.3", **forwarded)  # our proxy: its report counts
    forged = await read_records(audit, "203.0.113.9", **forwarded)  # anyone else: the peer is the client
    pseudonym = audit.service.pseudonymise
    assert (await access_record(audit, via_proxy))["ip_key"] == pseudonym("ip", "198.51.100.41")
    assert (await access_record(audit, forged))["ip_key"] == pseudonym("ip", "203.0.113.9")


async def test_r11_search_export_and_stats_never_show_the_client_ip_or_user_agent(audit: Audit) -> None:
    for i in range(6):  # a statistics cell that is published (AUDIT_STATS_MIN_CELL is 5)
        await audit.append(
            records.access_logged(at=audit.clock.now(), ip_address=f"198.51.100.{50 + i}"), "-"
        )
    await access_record(audit, await read_records(audit, "198.51.100.49"))
    key = audit.service.pseudonymise("ip", "198.51.100.50")
    search = await audit.http.get("/v1/audit/records", params={"ip_key": key}, headers=auth())
    [found] = search.json()
    assert found["payload"]["ip_key"] == key and "ip_address" not in found["payload"]
    bodies = {
        "search": (await audit.http.get("/v1/audit/records", params={"kind": "access"}, headers=auth())).text,
        "csv": (await audit.http.get("/v1/audit/export", params={"format": "csv"}, headers=auth())).text,
        "json": (await audit.http.get("/v1/audit/export", params={"format": "json"}, headers=auth())).text,
    }
    stats = await audit.http.get("/v1/audit/stats", params={"type": "access.logged"}, headers=auth())
    assert any(cell["count"] for cell in stats.json()["cells"]), stats.text
    bodies["stats"] = stats.text
    for name, body in bodies.items():
        for raw in ("198.51.100.5", "198.51.100.49", "kg-portal/2.3", "AuditTest"):
            assert raw not in body, (name, raw)
        assert (key in body) == (name != "stats"), name  # statistics hold no pseudonym either


async def test_r11_a_legal_disclosure_opens_the_client_ip_and_user_agent(audit: Audit) -> None:
    record = await access_record(audit, await read_records(audit, "198.51.100.60"))
    body = {**request_body("-"), "scope": {"ip_key": record["ip_key"]}}
    dr = (await audit.http.post("/v1/audit/disclosures", json=body, headers=auth(AUDITOR_KEY))).json()
    decided = await audit.http.post(
        f"/v1/audit/disclosures/{dr['disclosure_id']}/approve", headers=auth(APPROVER_KEY)
    )
    assert decided.status_code == 200, decided.text
    opened = await audit.http.post(
        f"/v1/audit/disclosures/{dr['disclosure_id']}/open", headers=auth(AUDITOR_KEY)
    )
    assert opened.status_code == 200, opened.text
    [disclosed] = opened.json()["records"]
    assert disclosed["type"] == "access.logged" and disclosed["ip_key"] == record["ip_key"]
    assert disclosed["values"] == {"ip_address": "198.51.100.60", "user_agent": AGENT}


async def test_r10_usage_window_from_attendance_and_completion(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """The booking service and the audit service on one broker: the meeting's attendance record
    (scheduler) and staff's completion (booking) give the auditor the actual window, in JST too."""
    async with running(make_settings, amqp_url) as h, running_audit(make_settings) as audit:
        booking_id = await kg_booking(h)
        await confirmed(h, booking_id)  # Tuesday 10:00 JST
        h.clock.set(datetime(2026, 11, 24, 10, 9, tzinfo=JST))
        joined = datetime(2026, 11, 24, 9, 58, tzinfo=JST)  # waited in the lobby
        await scheduler_says(h, MeetingJoined(booking_id=booking_id, appointment_version=1, at=joined))
        await h.status_becomes(booking_id, "attended")
        check = {"method": "name_and_contact", "at": "2026-11-24T10:01:00+09:00"}
        assert (
            await h.staff("POST", f"/v1/bookings/{booking_id}/identity-check", json=check)
        ).status_code == 200
        h.clock.set(datetime(2026, 11, 24, 10, 40, tzinfo=JST))
        usage = {"started_at": "2026-11-24T10:00:00+09:00", "ended_at": "2026-11-24T10:27:00+09:00"}
        r = await h.staff("POST", f"/v1/bookings/{booking_id}/completion", json=usage)
        assert r.json()["status"] == "completed", r.text

        async def usage_records() -> list[dict[str, Any]]:
            params = {"booking_id": booking_id, "kind": "usage"}
            found = (await audit.http.get("/v1/audit/records", params=params, headers=auth())).json()
            return found if len(found) == 2 else []

        attended, completed = await eventually(usage_records, what="attendance and completion in audit")
    assert (attended["type"], completed["type"]) == ("booking.attended", "booking.completed")
    assert completed["usage_start"] == "2026-11-24T00:58:00+00:00"  # stored in UTC
    assert completed["usage_start_jst"] == "2026-11-24T09:58:00+09:00"  # shown in JST
    assert completed["usage_end_jst"] == "2026-11-24T10:27:00+09:00"
    assert (completed["usage_minutes"], completed["usage_from"]) == (29.0, "joined")
    assert (completed["day"], completed["hour"]) == ("2026-11-24", 9)
    assert completed["payload"]["started_at"] == "2026-11-24T01:00:00Z"  # staff's record kept beside it
