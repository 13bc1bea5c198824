"""Retention (R10): records past their office's keeping period go, the chain still verifies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.audit import admin
from shared.clock import FixedClock
from tests.integration.test_audit_ingest import device, requested
from tests.support.audit import OFFICE, T0, Audit, running_audit

HW = "kohoku-hellowork"  # keeps its policy's record_retention: 5 years


@pytest.fixture
async def audit(make_settings: Callable[..., Any]) -> AsyncIterator[Audit]:
    async with running_audit(make_settings, audit_retention_days_by_office={OFFICE: 365}) as a:
        yield a


async def kinds(audit: Audit, stream: str) -> list[str]:
    docs = await audit.service.store.records.find({"stream": stream}).sort("seq", 1).to_list()
    return [d.get("booking_id") or d["type"] for d in docs]


async def test_r10_retention_purge_leaves_a_checkpoint_and_the_chain_still_verifies(
    audit: Audit, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    old_device = await audit.append(device("old-0", device_id="DEV-OLD"))
    for i in range(1, 4):
        await audit.append(requested(f"old-{i}"))
    await audit.append(requested("hw-0"), office=HW)
    audit.clock.advance(timedelta(days=200))
    for i in range(2):
        await audit.append(requested(f"recent-{i}"))
    audit.clock.advance(timedelta(days=200))  # T0 + 400 days: the first four are past KG's 365 days

    purged = await audit.service.purge_once()

    assert [(p.stream, p.up_to_seq, p.deleted) for p in purged] == [(OFFICE, 4, 4)]
    assert await kinds(audit, OFFICE) == ["recent-0", "recent-1", "audit.retention_purged"]
    assert await kinds(audit, HW) == ["hw-0"]  # five years for Hello Work: untouched
    assert await audit.service.store.sealed.find_one({"_id": str(old_device.event_id)}) is None
    checkpoint = await audit.service.store.checkpoint(OFFICE)
    assert checkpoint is not None and checkpoint["seq"] == 4
    report = await audit.verify()
    assert report["ok"], report["first_problem"]
    [kg] = [s for s in report["streams"] if s["stream"] == OFFICE]
    assert (kg["checkpoint_seq"], kg["first_seq"], kg["last_seq"]) == (4, 5, 7)

    assert await audit.service.purge_once() == []  # nothing more is due
    await audit.append(requested("after"))
    assert (await audit.verify())["ok"]

    # the same job from the command line, years later, for Hello Work
    cli_clock = FixedClock(T0 + timedelta(days=365 * 5 + 30))
    [hw] = [p for p in await admin.purge(audit.settings, clock=cli_clock) if p.stream == HW]
    assert (hw.up_to_seq, hw.deleted) == (1, 1)
    await audit.append(requested("hw-later"), office=HW)  # the CLI appended meanwhile: catch up, no fork
    assert audit.service.appender.stats.catch_ups == 1
    assert await kinds(audit, HW) == ["audit.retention_purged", "hw-later"]
    assert (await audit.verify())["ok"]

    heads = mongo[audit.settings.database("audit")]["checkpoints"]
    await heads.update_one({"_id": OFFICE}, {"$set": {"seq": 5}})  # hide a deletion behind the checkpoint
    problem = (await audit.verify())["first_problem"]
    assert (problem["kind"], problem["stream"]) == ("checkpoint", OFFICE)
