"""consultctl scheduler counsellors load/list and consultctl timers, against the real database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from typer.testing import CliRunner

from ops.cli import app
from services.scheduler.store import TimerStore
from services.scheduler.timing import TimerKind, TimerSpec
from shared.mongo import Doc
from tests.support import MONGODB_URL
from tests.support.scheduler import DEMO_OFFICES, ROOT, jst


@pytest.fixture
def cli_env(db_prefix: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MONGODB_URL", MONGODB_URL)
    monkeypatch.setenv("DB_PREFIX", db_prefix)
    monkeypatch.setenv("EXTRA_OFFICES_DIR", str(DEMO_OFFICES))
    return db_prefix


async def _invoke(*args: str) -> Any:
    """The CLI runs its own event loop, so it runs in a thread here, as from a shell."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env={"COLUMNS": "250"})


async def test_seed_file_loads_and_lists_counsellors_by_office(cli_env: str) -> None:
    result = await _invoke("scheduler", "counsellors", "load", str(ROOT / "deploy" / "counsellors.yaml"))
    assert result.exit_code == 0, result.output
    assert "created 7" in result.output and "skipped" not in result.output
    again = await _invoke("scheduler", "counsellors", "load", str(ROOT / "deploy" / "counsellors.yaml"))
    assert "created 0" in again.output and "updated 7" in again.output  # idempotent
    listed = await _invoke("scheduler", "counsellors", "list", "--office", "demo-town")
    assert listed.exit_code == 0, listed.output
    assert "demo-aoki" in listed.output and "kg-sato" not in listed.output


async def test_timers_command_lists_pending_timers(cli_env: str, mongo: AsyncMongoClient[Doc]) -> None:
    timers = TimerStore(mongo[f"{cli_env}scheduler"])
    due = jst(2026, 11, 30, 9, 10)
    await timers.arm(TimerSpec(TimerKind.NO_SHOW, "b-cli", "demo-town", 1, due), correlation_id="c", now=due)
    result = await _invoke("timers")
    assert result.exit_code == 0, result.output
    assert "b-cli:no_show:v1" in result.output and "2026年11月30日(月) 09:10" in result.output
    lease = await _invoke("scheduler", "lease")
    assert lease.exit_code == 0 and "no scheduler has taken the timer lease" in lease.output


async def test_backfill_command_marks_what_was_stored_before_the_markers(
    cli_env: str, mongo: AsyncMongoClient[Doc]
) -> None:
    db = mongo[f"{cli_env}scheduler"]
    due = jst(2026, 11, 30, 9, 10)
    await db["timers"].insert_one(
        {
            "_id": "b-old:no_show:v1",
            "booking_id": "b-old",
            "due_at": due,
            "status": "pending",
            "armed_at": due,
        }
    )
    await db["requests"].insert_one(
        {"_id": "b-old", "office_id": "demo-town", "status": "needs_staff", "rev": 0}
    )
    result = await _invoke("scheduler", "backfill")
    assert result.exit_code == 0, result.output
    assert "due markers for 1 pending timers; queue markers for 1 waiting requests" in result.output
    assert await db["timer_due.wheel.20261130"].find_one({"_id": "b-old:no_show:v1"})
    assert await db["coordination_queue.demo-town.needs_staff"].find_one({"_id": "b-old"})
    again = await _invoke("scheduler", "backfill")  # idempotent
    assert again.exit_code == 0 and "for 1 pending timers" in again.output
