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
        consultctl, audit.settings, "create-key", "--name", "監査 花子", "--role", "auditor"
    )
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
    assert (await audit.verify())["ok"]  # the CLI appended to the same chain as the service


async def test_audit_create_key_refuses_other_roles(audit: Audit) -> None:
    done = await asyncio.to_thread(
        consultctl, audit.settings, "create-key", "--name", "x", "--role", "portal"
    )
    assert done.returncode != 0 and "roles must be among" in done.stderr


async def test_audit_purge_command_runs_the_retention_job(audit: Audit) -> None:
    done = await asyncio.to_thread(consultctl, audit.settings, "purge")
    assert done.returncode == 0, done.stderr
