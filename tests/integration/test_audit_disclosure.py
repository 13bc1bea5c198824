"""Legal disclosure (R11): four eyes, legal grounds, and every step an audit record itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest

from services.audit.auth import credential
from tests.integration.test_audit_ingest import device
from tests.support.audit import APPROVER_KEY, AUDITOR_KEY, T0, Audit, auth, running_audit

PORTAL_KEY = "portal-hw.portal-secret-0123456789"


@pytest.fixture
async def audit(make_settings: Callable[..., Any]) -> AsyncIterator[Audit]:
    async with running_audit(make_settings) as a:
        yield a


def request_body(device_key: str) -> dict[str, Any]:
    return {
        "legal_basis": "刑事訴訟法第197条第2項(捜査関係事項照会)",
        "authority": "北海道警察釧路方面本部",
        "reference_number": "釧方刑第1234号",
        "scope": {"device_key": device_key},
    }


async def test_r11_legal_disclosure_needs_a_second_person_and_every_step_is_recorded(audit: Audit) -> None:
    await audit.append(device("b-7", device_id="DEV-DISCLOSE-1"))
    await audit.append(device("b-8", device_id="DEV-SOMEONE-ELSE"))
    key = audit.service.pseudonymise("device", "DEV-DISCLOSE-1")
    http = audit.http

    r = await http.post("/v1/audit/disclosures", json=request_body(key), headers=auth(AUDITOR_KEY))
    assert r.status_code == 201, r.text
    dr = r.json()["disclosure_id"]
    assert r.json()["status"] == "requested" and r.json()["requested_by"] == AUDITOR_KEY.split(".")[0]
    audit.clock.advance(timedelta(minutes=5))

    opened = await http.post(f"/v1/audit/disclosures/{dr}/open", headers=auth(AUDITOR_KEY))
    assert opened.status_code == 409  # not approved yet
    self_approval = await http.post(f"/v1/audit/disclosures/{dr}/approve", headers=auth(AUDITOR_KEY))
    assert self_approval.status_code == 403  # an auditor is not an approver
    approved = await http.post(f"/v1/audit/disclosures/{dr}/approve", json={"reason": "令状確認済"},
                               headers=auth(APPROVER_KEY))  # fmt: skip
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    again = await http.post(f"/v1/audit/disclosures/{dr}/reject", headers=auth(APPROVER_KEY))
    assert again.status_code == 409
    audit.clock.advance(timedelta(minutes=5))

    opened = await http.post(f"/v1/audit/disclosures/{dr}/open", headers=auth(AUDITOR_KEY))
    assert opened.status_code == 200, opened.text
    body = opened.json()
    assert body["reference_number"] == "釧方刑第1234号"
    [record] = body["records"]
    assert record["booking_id"] == "b-7" and record["values"]["device_id"] == "DEV-DISCLOSE-1"
    assert record["values"]["ip_address"] == "198.51.100.23"
    assert "DEV-SOMEONE-ELSE" not in opened.text  # only the scope

    trail = await http.get("/v1/audit/records", params={"kind": "audit"}, headers=auth())
    steps = [(x["type"], x["actor"]) for x in trail.json() if x["type"].startswith("audit.disclosure")]
    auditor, approver = AUDITOR_KEY.split(".")[0], APPROVER_KEY.split(".")[0]
    assert steps == [
        ("audit.disclosure_requested", auditor),
        ("audit.disclosure_approved", approver),
        ("audit.disclosure_opened", auditor),
    ]
    opened_record = trail.json()[-1]["payload"]
    assert opened_record["legal_basis"].startswith("刑事訴訟法") and len(opened_record["record_ids"]) == 1
    assert "DEV-DISCLOSE-1" not in trail.text  # the trail names records, never the values
    assert (await audit.verify())["ok"]


async def test_r11_an_approver_cannot_approve_their_own_request(audit: Audit) -> None:
    await audit.append(device("b-9"))
    key = audit.service.pseudonymise("device", "DEV-8F2A-77C1")
    r = await audit.http.post("/v1/audit/disclosures", json=request_body(key), headers=auth(APPROVER_KEY))
    assert r.status_code == 201
    dr = r.json()["disclosure_id"]
    own = await audit.http.post(f"/v1/audit/disclosures/{dr}/approve", headers=auth(APPROVER_KEY))
    assert own.status_code == 403 and "four eyes" in own.json()["detail"]


async def test_r11_a_portal_key_can_neither_request_nor_read_a_disclosure(audit: Audit) -> None:
    portal = credential(PORTAL_KEY, name="HW portal", roles=["portal"], now=T0, created_by="test")
    await audit.service.store.put_credential(portal)
    r = await audit.http.post("/v1/audit/disclosures", json=request_body("x"), headers=auth(PORTAL_KEY))
    assert r.status_code == 403
    assert (await audit.http.post("/v1/audit/disclosures", json=request_body("x"))).status_code == 401


async def test_r11_a_request_must_state_its_legal_grounds_and_a_narrow_scope(audit: Audit) -> None:
    vague = {**request_body("k"), "scope": {"office_id": "kushiro-gyosei"}}
    assert (await audit.http.post("/v1/audit/disclosures", json=vague, headers=auth())).status_code == 422
    no_basis = {k: v for k, v in request_body("k").items() if k != "legal_basis"}
    assert (await audit.http.post("/v1/audit/disclosures", json=no_basis, headers=auth())).status_code == 422
