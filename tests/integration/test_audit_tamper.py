"""Editing, deleting or reordering stored records directly makes verification fail and name the record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from shared.events import BookingCancelled, Envelope, Recipient
from tests.integration.test_audit_ingest import requested
from tests.support.audit import OFFICE, Audit, consultctl, running_audit


@pytest.fixture
async def audit(make_settings: Callable[..., Any]) -> AsyncIterator[Audit]:
    async with running_audit(make_settings) as a:
        yield a


async def seeded(audit: Audit, n: int = 6) -> list[Envelope[Any]]:
    events = [await audit.append(requested(f"b-{i}")) for i in range(n - 1)]
    person = Recipient(name="山田", email="y@example.jp")
    cancel = BookingCancelled(
        booking_id="b-0", reason="person", channel="phone", recipient=person, terms_version="2023-11-08"
    )
    events.append(await audit.append(cancel))
    await audit.service.appender.save_heads()
    assert (await audit.verify())["ok"]
    return events


def records_of(mongo: AsyncMongoClient[dict[str, Any]], audit: Audit) -> AsyncCollection[dict[str, Any]]:
    return mongo[audit.settings.database("audit")]["records"]


async def first_problem(audit: Audit) -> dict[str, Any]:
    report = await audit.verify()
    assert report["ok"] is False
    return dict(report["first_problem"])


async def test_audit_an_edited_record_fails_verification_and_is_named(
    audit: Audit, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    events = await seeded(audit)
    target = str(events[2].event_id)
    await records_of(mongo, audit).update_one({"_id": target}, {"$set": {"payload.duration_minutes": 10}})
    problem = await first_problem(audit)
    assert (problem["kind"], problem["seq"], problem["event_id"], problem["stream"]) == (
        "edited",
        3,
        target,
        OFFICE,
    )


async def test_audit_a_deleted_record_fails_verification_and_is_named(
    audit: Audit, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    events = await seeded(audit)
    await records_of(mongo, audit).delete_one({"_id": str(events[3].event_id)})
    problem = await first_problem(audit)
    assert (problem["kind"], problem["seq"]) == ("deleted", 4)
    assert str(events[4].event_id) in problem["detail"]  # the record after the hole


async def test_audit_deleting_the_newest_records_is_caught_by_the_head(
    audit: Audit, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    events = await seeded(audit)
    await records_of(mongo, audit).delete_one({"_id": str(events[-1].event_id)})
    problem = await first_problem(audit)
    assert (problem["kind"], problem["seq"]) == ("deleted", 6)


async def test_audit_reordered_records_fail_verification_and_are_named(
    audit: Audit, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    events = await seeded(audit)
    col = records_of(mongo, audit)
    third, fourth = str(events[2].event_id), str(events[3].event_id)
    await col.update_one({"_id": third}, {"$set": {"seq": -3}})  # swap seqs 3 and 4 under the unique index
    await col.update_one({"_id": fourth}, {"$set": {"seq": 3}})
    await col.update_one({"_id": third}, {"$set": {"seq": 4}})
    problem = await first_problem(audit)
    assert (problem["kind"], problem["seq"], problem["event_id"]) == ("reordered", 3, fourth)
    assert third in problem["detail"]


async def test_audit_deleting_a_record_and_renumbering_the_rest_is_named(
    audit: Audit, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    events = await seeded(audit)
    col = records_of(mongo, audit)
    await col.delete_one({"_id": str(events[1].event_id)})
    for i in range(2, 6):
        await col.update_one({"_id": str(events[i].event_id)}, {"$set": {"seq": i}})
    await mongo[audit.settings.database("audit")]["heads"].update_one({"_id": OFFICE}, {"$set": {"seq": 5}})
    problem = await first_problem(audit)
    assert (problem["kind"], problem["seq"], problem["event_id"]) == ("deleted", 2, str(events[2].event_id))


async def test_audit_verify_command_names_the_edited_record(
    audit: Audit, mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    events = await seeded(audit)
    ok = await asyncio.to_thread(consultctl, audit.settings, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "chain verified" in ok.stdout
    target = str(events[4].event_id)
    await records_of(mongo, audit).update_one({"_id": target}, {"$set": {"office_id": "elsewhere"}})
    broken = await asyncio.to_thread(consultctl, audit.settings, "verify")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"first problem: edited record at seq 5 of {OFFICE} ({target})" in broken.stdout
