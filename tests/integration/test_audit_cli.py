"""consultctl audit: keys created on the command line open the API; the retention job runs from it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.support.audit import Audit, auth, consultctl, running_audit


@pytest.fixture
async def audit(make_settings: Callable[..., Any]) -> AsyncIterator[Audit]:
    async with running_audit(make_settings) as a:
        yield a


async def test_audit_create_key_prints_a_key_that_opens_the_api_and_is_recorded(audit: Audit) -> None:
    done = await asyncio.to_thread(
        consultctl, audit.settings, "create-key", "--name", "監査 花子", "--person", "kansa.hanako",
        "--role", "auditor",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    key_id = key.split(".")[0]
    stored = await audit.service.store.credential(key_id)
    assert stored is not None and key.split(".")[1] not in str(stored)  # only the hash is kept
    r = await audit.http.get(
        "/v1/audit/records", params={"type": "audit.credential_created"}, headers=auth(key)
    )
    assert r.status_code == 200
    [record] = r.json()
    assert record["payload"]["key_id"] == key_id and record["payload"]["roles"] == ["auditor"]
    assert record["payload"]["person"] == "kansa.hanako"
    assert (await audit.verify())["ok"]  # the CLI appended to the same chain as the service


async def test_audit_create_key_needs_a_person_its_name_gives_none_of(audit: Audit) -> None:
    done = await asyncio.to_thread(
        consultctl, audit.settings, "create-key", "--name", "監査 花子", "--role", "auditor"
    )
    assert done.returncode != 0 and "--person" in done.stderr
    derived = await asyncio.to_thread(
        consultctl, audit.settings, "create-key", "--name", "Kansa Jiro", "--role", "auditor"
    )
    assert derived.returncode == 0, derived.stderr
    stored = await audit.service.store.credential(derived.stdout.strip().split(".")[0])
    assert stored is not None and stored["person"] == "kansa-jiro"


async def test_r11_keys_of_one_person_and_a_revoked_key_opens_nothing(audit: Audit) -> None:
    async def create(role: str) -> str:
        done = await asyncio.to_thread(
            consultctl, audit.settings, "create-key", "--name", "監査 花子", "--person", "kansa.hanako",
            "--role", role,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    first, second = await create("auditor"), await create("disclosure-approver")
    assert first.split(".")[0] != second.split(".")[0]
    records = "/v1/audit/records"
    for key in (first, second):
        assert (await audit.http.get(records, headers=auth(key))).status_code == 200

    revoked = await asyncio.to_thread(consultctl, audit.settings, "revoke-key", first.split(".")[0])
    assert revoked.returncode == 0 and "kansa.hanako" in revoked.stdout, revoked.stderr
    assert (await audit.http.get(records, headers=auth(first))).status_code == 401
    body = {"legal_basis": "刑事訴訟法第197条", "authority": "北海道警察", "reference_number": "1",
            "scope": {"booking_id": "b-1"}}  # fmt: skip
    assert (await audit.http.post("/v1/audit/disclosures", json=body, headers=auth(first))).status_code == 401
    again = await asyncio.to_thread(consultctl, audit.settings, "revoke-key", first.split(".")[0])
    assert again.returncode == 1 and "no active audit key" in again.stderr

    trail = await audit.http.get(records, params={"kind": "audit"}, headers=auth(second))
    assert trail.status_code == 200  # the person's other key still opens
    steps = [x for x in sorted(trail.json(), key=lambda x: x["seq"]) if x["type"].startswith("audit.cred")]
    kept = [(x["type"], x["payload"]["person"]) for x in steps]
    assert kept == [
        ("audit.credential_created", "kansa.hanako"),
        ("audit.credential_created", "kansa.hanako"),
        ("audit.credential_revoked", "kansa.hanako"),
    ]
    assert steps[-1]["payload"]["key_id"] == first.split(".")[0]


async def test_audit_create_key_refuses_other_roles(audit: Audit) -> None:
    done = await asyncio.to_thread(
        consultctl, audit.settings, "create-key", "--name", "x", "--role", "portal"
    )
    assert done.returncode != 0 and "roles must be among" in done.stderr


async def test_audit_purge_command_runs_the_retention_job(audit: Audit) -> None:
    done = await asyncio.to_thread(consultctl, audit.settings, "purge")
    assert done.returncode == 0, done.stderr
