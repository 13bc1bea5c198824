"""Running the audit service in-process against the real servers, for tests/integration/test_audit_*."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from services.audit import records
from services.audit.app import create_app
from services.audit.config import Settings
from services.audit.service import AuditService
from shared.clock import FixedClock
from shared.events import Envelope, Payload, new_event
from shared.settings import ServiceSettings
from tests.support import eventually, serve

AUDITOR_KEY = "ak-test-auditor.auditor-secret-0123456789"
APPROVER_KEY = "ak-test-approver.approver-secret-0123456789"
T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 10:00 JST
OFFICE = "kushiro-gyosei"
ROOT = Path(__file__).resolve().parents[2]


def auth(key: str = AUDITOR_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Audit:
    http: httpx.AsyncClient
    service: AuditService
    clock: FixedClock
    settings: Settings
    app: FastAPI

    def event(self, payload: Payload, office: str = OFFICE) -> Envelope[Any]:
        return new_event(payload, office_id=office, producer="booking", clock=self.clock)

    async def publish(self, payload: Payload | Envelope[Any], office: str = OFFICE) -> Envelope[Any]:
        """Through the broker, as any service would publish it."""
        event = payload if isinstance(payload, Envelope) else self.event(payload, office)
        await self.service.runtime.publisher.publish(event)
        return event

    async def append(self, payload: Payload, office: str = OFFICE) -> Envelope[Any]:
        """Straight into the ingest pipeline, skipping the broker (setting up a store quickly)."""
        event = self.event(payload, office)
        await self.service.record(
            records.from_event(event, now=self.clock.now(), pseudonymise=self.service.pseudonymise)
        )
        return event

    async def count(self, query: dict[str, Any] | None = None) -> int:
        return await self.service.store.records.count_documents(query or {})

    async def stored(self, event: Envelope[Any], timeout: float = 15.0) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            return await self.service.store.records.find_one({"_id": str(event.event_id)})

        return await eventually(probe, timeout=timeout, what=f"{event.type} in the audit store")

    async def verify(self) -> dict[str, Any]:
        r = await self.http.get("/v1/audit/verify", headers=auth())
        assert r.status_code == 200, r.text
        return dict(r.json())


@asynccontextmanager
async def running_audit(make_settings: Callable[..., Any], **overrides: Any) -> AsyncIterator[Audit]:
    values: dict[str, Any] = {
        "audit_bootstrap_auditor_key": AUDITOR_KEY,
        "audit_bootstrap_approver_key": APPROVER_KEY,
        "audit_purge_interval_seconds": 0,
        **overrides,
    }
    settings: Settings = make_settings(Settings, **values)
    clock = FixedClock(T0)
    app = create_app(settings, clock)
    async with serve(app) as http:
        yield Audit(http, app.state.audit, clock, settings, app)


def consultctl(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`consultctl audit ...` as an operator runs it, against this test's databases (blocking)."""
    return run_consultctl(settings, "audit", *args)


def run_consultctl(settings: ServiceSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """`consultctl ...` as an operator runs it, with a service's settings (its databases, broker)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        ENVIRONMENT="test",
        MONGODB_URL=settings.mongodb_url,
        AMQP_URL=settings.amqp_url,
        DB_PREFIX=settings.db_prefix,
        SECRET_KEY=settings.secret_key,
    )
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
