"""The auditor API: who may read, search with cursors, exports, statistics (R10, R11, R12)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest

from examples import records
from services.audit.auth import credential
from shared.events import Appointment, BookingCompleted, BookingConfirmed, Recipient
from tests.integration.test_audit_ingest import device, requested
from tests.support import eventually
from tests.support.audit import APPROVER_KEY, AUDITOR_KEY, OFFICE, T0, Audit, auth, running_audit

PORTAL_KEY = "portal-kg.portal-secret-0123456789"
READ_PATHS = ("/v1/audit/records", "/v1/audit/export", "/v1/audit/stats", "/v1/audit/verify")


@pytest.fixture
async def audit(make_settings: Callable[..., Any]) -> AsyncIterator[Audit]:
    async with running_audit(make_settings) as a:
        yield a


async def test_r11_only_auditor_credentials_read_the_audit_store(audit: Audit) -> None:
    portal = credential(PORTAL_KEY, name="KG portal", roles=["portal"], now=T0, created_by="test")
    await audit.service.store.put_credential(portal)
    wrong_secret = AUDITOR_KEY.split(".")[0] + ".not-the-secret"
    for path in READ_PATHS:
        assert (await audit.http.get(path)).status_code == 401
        assert (await audit.http.get(path, headers=auth(wrong_secret))).status_code == 401
        assert (await audit.http.get(path, headers={"X-API-Key": PORTAL_KEY})).status_code == 403
        assert (await audit.http.get(path, headers=auth(AUDITOR_KEY))).status_code == 200, path
        assert (await audit.http.get(path, headers=auth(APPROVER_KEY))).status_code == 200, path


async def test_audit_walking_skeleton_reads_back_a_booking_requested_record(audit: Audit) -> None:
    event = await audit.publish(requested("b-skeleton"))
    await audit.stored(event)
    r = await audit.http.get("/v1/audit/records", params={"booking_id": "b-skeleton"}, headers=auth())
    assert r.status_code == 200
    [record] = r.json()
    assert (record["type"], record["office_id"], record["producer"]) == (
        "booking.requested",
        OFFICE,
        "booking",
    )
    assert record["event_id"] == str(event.event_id) and record["occurred_at"].startswith("2026-12-01T01:00")


async def test_audit_search_pages_through_results_with_a_cursor(audit: Audit) -> None:
    for i in range(25):
        if i % 2:
            audit.clock.advance(timedelta(seconds=1))  # pairs share a timestamp: the id breaks the tie
        await audit.append(requested(f"p-{i}"))
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"type": "booking.requested", "limit": 10}
    for _ in range(5):
        r = await audit.http.get("/v1/audit/records", params=params, headers=auth())
        seen += r.json()
        if "x-next-cursor" not in r.headers:
            break
        assert 'rel="next"' in r.headers["link"]
        params["cursor"] = r.headers["x-next-cursor"]
    assert len(seen) == 25 and len({s["event_id"] for s in seen}) == 25
    keys = [(s["occurred_at"], s["event_id"]) for s in seen]
    assert keys == sorted(keys)
    bad = await audit.http.get("/v1/audit/records", params={"cursor": "nonsense"}, headers=auth())
    assert bad.status_code == 400


async def test_audit_search_by_time_office_type_actor_and_device_pseudonym(audit: Audit) -> None:
    await audit.append(requested("f-1"), office="kohoku-hellowork")
    audit.clock.advance(timedelta(hours=1))
    await audit.append(device("f-2", device_id="DEV-FILTER"))
    route = "/v1/bookings/{booking_id}"
    access = records.access_logged(at=T0, request_id="r", method="GET", route=route, status=200)
    await audit.append(access, office="-")

    async def ids(**params: Any) -> list[str]:
        r = await audit.http.get("/v1/audit/records", params=params, headers=auth())
        assert r.status_code == 200, r.text
        # the audit API's own access logs arrive meanwhile: leave them out
        return [x.get("booking_id") or x["type"] for x in r.json() if x["producer"] != "audit"]

    key = audit.service.pseudonymise("device", "DEV-FILTER")
    assert await ids(office_id="kohoku-hellowork") == ["f-1"]
    assert await ids(device_key=key) == ["f-2"]
    assert await ids(actor="portal:kg") == ["access.logged"]
    assert await ids(kind="device") == ["f-2"]
    later = await ids(**{"from": (T0 + timedelta(minutes=30)).isoformat()})
    assert sorted(later) == ["access.logged", "f-2"]  # same instant: their order is by id
    assert await ids(**{"to": (T0 + timedelta(minutes=30)).isoformat()}) == ["f-1"]


async def test_r11_search_and_exports_never_show_raw_device_values(audit: Audit) -> None:
    await audit.append(device("d-1", device_id="DEV-RAW-4711"))
    key = audit.service.pseudonymise("device", "DEV-RAW-4711")
    bodies = [
        (await audit.http.get("/v1/audit/records", params={"booking_id": "d-1"}, headers=auth())).text,
        (await audit.http.get("/v1/audit/export", params={"format": "csv"}, headers=auth())).text,
        (await audit.http.get("/v1/audit/export", params={"format": "json"}, headers=auth())).text,
    ]
    for body in bodies:
        assert key in body
        for raw in ("DEV-RAW-4711", "198.51.100.23", "Windows NT"):
            assert raw not in body


async def test_r12_a_recipient_is_never_readable_from_the_audit_store(audit: Audit) -> None:
    confirmed = BookingConfirmed(
        booking_id="c-1",
        appointment=Appointment(
            counsellor_id="c",
            counsellor_name="委員",
            start=T0,
            end=T0 + timedelta(minutes=30),
            meeting_url="https://teams.example/m",
            app="teams",
        ),
        recipient=Recipient(name="佐藤 一郎", email="ichiro.sato@example.jp"),
        terms_version="2023-11-08",
    )
    event = await audit.publish(confirmed)
    await audit.stored(event)
    r = await audit.http.get("/v1/audit/records", params={"booking_id": "c-1"}, headers=auth())
    body = r.text
    assert "佐藤" not in body and "ichiro" not in body
    assert r.json()[0]["email_key"] == audit.service.pseudonymise("email", "ichiro.sato@example.jp")


async def test_r11_usage_statistics_publish_aggregates_with_small_cells_suppressed(audit: Audit) -> None:
    def completed(i: int, hour: int) -> BookingCompleted:
        start = T0 + timedelta(hours=hour)
        return BookingCompleted(booking_id=f"u-{i}", started_at=start, ended_at=start + timedelta(minutes=20))

    for i in range(5):
        await audit.append(completed(i, 0))  # 10:00 JST
    for i in range(5, 7):
        await audit.append(completed(i, 1))  # 11:00 JST: only two, would single people out
    r = await audit.http.get("/v1/audit/stats", params={"office_id": OFFICE}, headers=auth())
    assert r.status_code == 200
    body = r.json()
    assert body["threshold"] == 5
    assert body["cells"] == [
        {
            "office_id": OFFICE,
            "day": "2026-12-01",
            "hour": 10,
            "count": 5,
            "minutes": 100.0,
            "suppressed": False,
        },
        {
            "office_id": OFFICE,
            "day": "2026-12-01",
            "hour": 11,
            "count": None,
            "minutes": None,
            "suppressed": True,
        },
    ]
    assert "u-5" not in r.text


async def test_audit_exports_stream_csv_and_json_and_are_recorded(audit: Audit) -> None:
    for i in range(7):
        audit.clock.advance(timedelta(seconds=1))
        await audit.append(requested(f"e-{i}"))
    r = await audit.http.get("/v1/audit/export", params={"format": "csv", "type": "booking.requested"},
                             headers=auth())  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert len(rows) == 7 and json.loads(rows[0]["payload"])["booking_id"] == "e-0"
    r = await audit.http.get("/v1/audit/export", params={"format": "json", "type": "booking.requested"},
                             headers=auth())  # fmt: skip
    assert [x["booking_id"] for x in r.json()] == [f"e-{i}" for i in range(7)]
    exports = await audit.service.store.records.find({"type": "audit.exported"}).to_list()
    assert len(exports) == 2 and exports[0]["actor"] == AUDITOR_KEY.split(".")[0]


async def test_r10_reading_the_audit_store_is_itself_access_logged(audit: Audit) -> None:
    await audit.http.get("/v1/audit/records", params={"booking_id": "none"}, headers=auth())

    async def logged() -> dict[str, Any] | None:
        return await audit.service.store.records.find_one({"type": "access.logged", "producer": "audit"})

    record = await eventually(logged, what="the audit API's own access log")
    assert record["actor"] == AUDITOR_KEY.split(".")[0]  # a key stored without a person is its own
    assert record["payload"]["credential"] == AUDITOR_KEY.split(".")[0]
    assert record["payload"]["route"] == "/v1/audit/records"


CONSOLE = "ak-console.console-secret-0123456789"


async def test_r11_the_console_key_acts_only_for_a_named_person_with_roles_it_holds(audit: Audit) -> None:
    console = credential(CONSOLE, name="console", roles=["auditor"], now=T0, created_by="test",
                         person="dev-console", delegates=True)  # fmt: skip
    await audit.service.store.put_credential(console)
    records = "/v1/audit/records"

    async def status(key: str, **acting: str) -> int:
        headers = auth(key) | {f"X-Acting-{k.title()}": v for k, v in acting.items()}
        return (await audit.http.get(records, params={"booking_id": "none"}, headers=headers)).status_code

    nobody = await audit.http.get(records, headers=auth(CONSOLE))
    assert nobody.status_code == 401 and "acts only for a named person" in nobody.json()["detail"]
    assert await status(CONSOLE, person="Not A Person") == 401
    assert await status(CONSOLE, person="kansa.hanako") == 403  # no role asserted: none
    assert await status(CONSOLE, person="kansa.hanako", roles="auditor,disclosure-approver") == 403
    assert await status(AUDITOR_KEY, person="kansa.hanako") == 403  # a plain key acts for no one else
    assert await status(AUDITOR_KEY, roles="auditor") == 403
    assert await status(CONSOLE, person="kansa.hanako", roles="auditor") == 200

    async def logged() -> dict[str, Any] | None:
        query = {"type": "access.logged", "producer": "audit", "actor": "kansa.hanako",
                 "payload.status": 200}  # fmt: skip
        return await audit.service.store.records.find_one(query)

    record = await eventually(logged, what="the access record of the console acting for kansa.hanako")
    assert record["payload"]["credential"] == "ak-console"  # R10: the person, and the key they came with
