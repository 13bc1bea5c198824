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
    assert own.status_code == 409 and own.json()["rule"] == "R11" and "four eyes" in own.json()["detail"]


HANAKO_AUDITOR = "ak-hanako-audit.hanako-secret-0123456789"
HANAKO_APPROVER = "ak-hanako-approve.hanako-secret-9876543210"
TARO_APPROVER = "ak-taro-approve.taro-secret-0123456789"
CONSOLE = "ak-console.console-secret-0123456789"


async def people(audit: Audit) -> None:
    """Hanako holds two keys (auditor, approver), Taro one; the console's key has both roles."""
    for token, person, role in (
        (HANAKO_AUDITOR, "kansa.hanako", "auditor"),
        (HANAKO_APPROVER, "kansa.hanako", "disclosure-approver"),
        (TARO_APPROVER, "shonin.taro", "disclosure-approver"),
    ):
        doc = credential(token, name=person, roles=[role], now=T0, created_by="test", person=person)
        await audit.service.store.put_credential(doc)
    console = credential(CONSOLE, name="console", roles=["auditor", "disclosure-approver"], now=T0,
                         created_by="test", person="dev-console", delegates=True)  # fmt: skip
    await audit.service.store.put_credential(console)


async def test_r11_a_second_key_of_the_requester_cannot_approve_only_another_person(audit: Audit) -> None:
    await people(audit)
    await audit.append(device("b-10", device_id="DEV-PEOPLE-1"))
    key = audit.service.pseudonymise("device", "DEV-PEOPLE-1")
    http = audit.http
    r = await http.post("/v1/audit/disclosures", json=request_body(key), headers=auth(HANAKO_AUDITOR))
    assert r.status_code == 201, r.text
    dr = r.json()["disclosure_id"]
    assert (r.json()["requested_by"], r.json()["requested_by_person"]) == ("ak-hanako-audit", "kansa.hanako")

    as_console = auth(CONSOLE) | {"X-Acting-Person": "kansa.hanako", "X-Acting-Roles": "disclosure-approver"}
    for her_other_key in (auth(HANAKO_APPROVER), as_console):
        own = await http.post(f"/v1/audit/disclosures/{dr}/approve", headers=her_other_key)
        assert own.status_code == 409 and own.json()["rule"] == "R11", own.text
        assert "kansa.hanako" in own.json()["detail"]
    still = await http.get(f"/v1/audit/disclosures/{dr}", headers=auth(HANAKO_AUDITOR))
    assert still.json()["status"] == "requested"

    approved = await http.post(f"/v1/audit/disclosures/{dr}/approve", headers=auth(TARO_APPROVER))
    assert approved.status_code == 200, approved.text
    assert (approved.json()["decided_by"], approved.json()["decided_by_person"]) == (
        "ak-taro-approve",
        "shonin.taro",
    )
    opened = await http.post(f"/v1/audit/disclosures/{dr}/open", headers=auth(HANAKO_APPROVER))
    assert opened.status_code == 200, opened.text  # the requester, as a person, with another key

    trail = await http.get("/v1/audit/records", params={"kind": "audit"}, headers=auth(TARO_APPROVER))
    steps = [
        (x["type"], x["actor"], x["payload"]["credential"])
        for x in sorted(trail.json(), key=lambda x: x["seq"])  # one instant (the fixed clock): chain order
        if x["type"].startswith("audit.disclosure")
    ]
    assert steps == [
        ("audit.disclosure_requested", "kansa.hanako", "ak-hanako-audit"),
        ("audit.disclosure_approved", "shonin.taro", "ak-taro-approve"),
        ("audit.disclosure_opened", "kansa.hanako", "ak-hanako-approve"),
    ]
    assert {x["payload"]["requested_by_person"] for x in trail.json()} == {"kansa.hanako"}
    assert (await audit.verify())["ok"]


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


async def test_r11_disclosure_requests_are_listed_newest_first_to_auditors_only(audit: Audit) -> None:
    made = []
    for key in ("dev-a", "dev-b"):
        r = await audit.http.post("/v1/audit/disclosures", json=request_body(key), headers=auth(AUDITOR_KEY))
        made.append(r.json()["disclosure_id"])
        audit.clock.advance(timedelta(minutes=1))
    await audit.http.post(f"/v1/audit/disclosures/{made[0]}/reject", headers=auth(APPROVER_KEY))

    listed = await audit.http.get("/v1/audit/disclosures", headers=auth(AUDITOR_KEY))
    assert listed.status_code == 200
    assert [d["disclosure_id"] for d in listed.json()] == [made[1], made[0]]
    waiting = await audit.http.get("/v1/audit/disclosures", params={"status": "requested"}, headers=auth())
    assert [d["disclosure_id"] for d in waiting.json()] == [made[1]]
    portal = credential(PORTAL_KEY, name="HW portal", roles=["portal"], now=T0, created_by="test")
    await audit.service.store.put_credential(portal)
    assert (await audit.http.get("/v1/audit/disclosures", headers=auth(PORTAL_KEY))).status_code == 403
    assert (await audit.http.get("/v1/audit/disclosures")).status_code == 401
