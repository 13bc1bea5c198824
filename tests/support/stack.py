"""The four services as real processes, on free ports, in their own vhost and databases; the console
(`console`) as a fifth process for the tests that use it (tests/e2e, tests/browser)."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.audit.admin import ensure_console_key as ensure_audit_console_key
from services.audit.config import Settings as AuditSettings
from services.booking.config import Settings as BookingSettings
from services.booking.ops import ensure_console_key as ensure_booking_console_key
from services.console import ops as console_ops
from services.console.config import Settings as ConsoleSettings
from services.notifier.config import Settings as NotifierSettings
from services.notifier.keys import ensure_console_key as ensure_notifier_console_key
from services.scheduler.config import Settings as SchedulerSettings
from services.scheduler.keys import ensure_console_key as ensure_scheduler_console_key
from shared.messaging import open_resting_copy
from shared.sealing import Sealer, SecretSealer
from shared.settings import ServiceSettings
from tests import support
from tests.support import RUN_ID, agreement
from tests.support.console import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("booking", "scheduler", "notifier", "audit")
AUDITOR_KEY = "e2e-auditor.e2e-auditor-secret-0123456789"
APPROVER_KEY = "e2e-approver.e2e-approver-secret-0123456789"
#: booking: a portal key (portal dev-portal) and a staff key (dev-staff), every office; test only
PORTAL_KEY = "cpk_e2e-portal-key-0123456789abcdefghijklmnopqrstu"
BOOKING_STAFF_KEY = "csk_e2e-staff-key-0123456789abcdefghijklmnopqrstuv"
#: scheduler: a staff key for every office (staff dev-staff); test only
SCHEDULER_STAFF_KEY = "css_e2e-scheduler-staff-key-0123456789abcdefghijk"


@dataclass
class Stack:
    amqp_url: str
    db_prefix: str
    urls: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: a process name that is not its service's (tests/scale: replicas `booking-1`, `booking-2`)
    modules: dict[str, str] = field(default_factory=dict)
    #: settings of one process only (tests/scale: each service its own broker user)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)

    def client(self, service: str, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.urls[service], timeout=15, **kwargs)  # type: ignore[arg-type]

    def start(self, service: str) -> None:
        log = self.logs[service].open("ab")
        self.procs[service] = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.modules.get(service, service)}"],
            cwd=ROOT,
            env=self.env | self.envs.get(service, {}) | {"HTTP_PORT": self.urls[service].rsplit(":", 1)[1]},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, service: str, *, kill: bool = False) -> None:
        proc = self.procs.pop(service, None)
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    async def wait_ready(self, service: str, timeout: float = 180.0) -> None:
        """Until /readyz answers 200. The client waits longer than the service's own checks take
        (up to 3 s for the database ping), and a time-out says what the last answer was."""
        last: list[str] = ["no answer yet"]

        async def ready() -> bool:
            proc = self.procs[service]
            if proc.poll() is not None:
                tail = self.logs[service].read_text(errors="replace")[-3000:]
                raise AssertionError(f"{service} exited with {proc.returncode}; log tail:\n{tail}")
            started = time.monotonic()
            try:
                async with httpx.AsyncClient(timeout=8) as c:
                    r = await c.get(f"{self.urls[service]}/readyz")
            except httpx.HTTPError as exc:
                last[0] = f"{type(exc).__name__} after {time.monotonic() - started:.1f}s"
                return False
            last[0] = f"{r.status_code} {r.text[:200]} in {time.monotonic() - started:.1f}s"
            return r.status_code == 200

        try:
            await support.eventually(ready, timeout=timeout, interval=0.3, what=f"{service} /readyz")
        except AssertionError as exc:
            tail = self.logs[service].read_text(errors="replace")[-4000:] if service in self.logs else ""
            raise AssertionError(f"{exc}; last answer: {last[0]}; log tail:\n{tail}") from None


def sealer_of(service: str) -> Sealer:
    """The key a service process of the stack seals its parked and delayed copies with (R12): the
    stack's services read the same environment (SECRET_KEY, PII_KEYS) as the test process."""
    if service == "booking":
        return BookingSettings().vault()
    return SecretSealer.from_secret(ServiceSettings().secret_key, f"service:{service}")


def parked_body(queue: str, message: dict[str, Any]) -> bytes:
    """The body of a message read from a queue through the management API (`encoding: auto`),
    opened with the key of the service whose queue it is if that service sealed it."""
    raw = message.get("payload", "")
    body = base64.b64decode(raw) if message.get("payload_encoding") == "base64" else str(raw).encode()
    headers = message.get("properties", {}).get("headers", {})
    return open_resting_copy(sealer_of(queue.split(".", 1)[0]), queue.split(".", 1)[0], body, headers)


async def _agree(stack: Stack) -> None:
    offices = ("kushiro-gyosei", "kohoku-hellowork", "demo-town")
    async with (
        stack.client("booking", headers={"Authorization": f"Bearer {BOOKING_STAFF_KEY}"}) as booking,
        stack.client("scheduler", headers={"X-Staff-Key": SCHEDULER_STAFF_KEY}) as scheduler,
    ):
        n = await agreement.check(booking, scheduler, offices)
    print(f"\nbooking and scheduler agree on all {n} bookings of the session")


def stack_env(amqp_url: str, db_prefix: str) -> dict[str, str]:
    """Environment for the service processes; extra settings can be added by later fixtures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        {
            "ENVIRONMENT": "test",
            "AMQP_URL": amqp_url,
            "MONGODB_URL": support.MONGODB_URL,
            "SMTP_URL": support.SMTP_URL,
            "DB_PREFIX": db_prefix,
            "OUTBOX_POLL_SECONDS": "0.2",
            # the demo office (short no-show grace, open all day) and its seed counsellors
            "EXTRA_OFFICES_DIR": str(ROOT / "deploy" / "offices-demo"),
            "COUNSELLORS_FILE": str(ROOT / "deploy" / "counsellors.yaml"),
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # audit: auditor credentials created at start-up (test only; refused in prod)
            "AUDIT_BOOTSTRAP_AUDITOR_KEY": AUDITOR_KEY,
            "AUDIT_BOOTSTRAP_APPROVER_KEY": APPROVER_KEY,
            # booking: development keys registered at start-up (refused in prod)
            "DEV_PORTAL_KEY": PORTAL_KEY,
            "DEV_STAFF_KEY": BOOKING_STAFF_KEY,
            # scheduler: its development staff key, every office (refused in prod)
            "STAFF_API_KEY": SCHEDULER_STAFF_KEY,
        }
    )
    return env


@dataclass
class ConsoleStack:
    """The console as one more process of the stack, calling the stack's booking, scheduler and audit
    with console keys made for this run; `account` makes a person account in its database."""

    stack: Stack
    url: str

    def settings(self) -> ConsoleSettings:
        return ConsoleSettings(
            environment="test",
            mongodb_url=support.MONGODB_URL,
            amqp_url=self.stack.amqp_url,
            db_prefix=self.stack.db_prefix,
            extra_offices_dir=ROOT / "deploy" / "offices-demo",
        )

    async def account(
        self,
        person_id: str,
        roles: list[str],
        offices: list[str] | None = None,
        counsellor: str | None = None,
    ) -> str:
        """A person account with the test password (tests.support.console.PASSWORD); its id."""
        await console_ops.create_account(
            person_id=person_id,
            name=f"試験 {person_id.split('.', maxsplit=1)[0]}",
            roles=roles,
            offices=offices or [],
            password=PASSWORD,
            counsellor_id=counsellor,
            settings=self.settings(),
        )
        return person_id

    async def age_sessions_of(self, person_id: str) -> None:
        """The person's sessions as if they had been idle past the timeout (SESSION_IDLE_MINUTES)."""
        long_ago = datetime(2000, 1, 1, tzinfo=UTC)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(support.MONGODB_URL)
        try:
            sessions = client[self.settings().database("console")]["sessions"]
            await sessions.update_many({"person_id": person_id}, {"$set": {"last_seen": long_ago}})
        finally:
            await client.close()


async def console_keys(stack: Stack, directory: Path) -> None:
    """The console's credential in each service it calls (`--console`: acts for the named person), in
    the files `make up` would keep (CONSOLE_KEY_DIR)."""
    where = {"environment": "test", "mongodb_url": support.MONGODB_URL, "db_prefix": stack.db_prefix}
    await ensure_audit_console_key(directory / "console-audit-key.txt", AuditSettings(**where))
    await ensure_booking_console_key(directory / "console-booking-key.txt", BookingSettings(**where))
    await ensure_scheduler_console_key(directory / "console-scheduler-key.txt", SchedulerSettings(**where))
    await ensure_notifier_console_key(directory / "console-notifier-key.txt", NotifierSettings(**where))


@pytest.fixture(scope="session")
async def console(stack: Stack) -> AsyncIterator[ConsoleStack]:
    """The console process, started once for the session's console tests (e2e and browser)."""
    keys = stack.logs["booking"].parent / "console-keys"
    await console_keys(stack, keys)
    stack.env.update(
        BOOKING_URL=stack.urls["booking"],
        SCHEDULER_URL=stack.urls["scheduler"],
        AUDIT_URL=stack.urls["audit"],
        NOTIFIER_URL=stack.urls["notifier"],
        CONSOLE_KEY_DIR=str(keys),
        RABBITMQ_MANAGEMENT_URL=support.RABBITMQ_API,
    )
    stack.urls["console"] = f"http://127.0.0.1:{support.free_port()}"
    stack.logs["console"] = stack.logs["booking"].parent / "console.log"
    stack.start("console")
    try:
        await stack.wait_ready("console")
        yield ConsoleStack(stack, stack.urls["console"])
    finally:
        stack.stop("console")


@pytest.fixture(scope="session")
async def stack(servers: None, _databases: list[str]) -> AsyncIterator[Stack]:
    vhost = f"e2e-{RUN_ID}"
    async with httpx.AsyncClient(timeout=10) as c:
        (await c.put(f"{support.RABBITMQ_API}/vhosts/{quote(vhost, safe='')}")).raise_for_status()
        user = httpx.URL(support.RABBITMQ_API).username or "guest"
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        (
            await c.put(f"{support.RABBITMQ_API}/permissions/{quote(vhost, safe='')}/{user}", json=perms)
        ).raise_for_status()
    db_prefix = f"e2e{RUN_ID}_"
    _databases.append(db_prefix)
    amqp_url = support.vhost_url(vhost)
    stack = Stack(amqp_url=amqp_url, db_prefix=db_prefix, env=stack_env(amqp_url, db_prefix))
    log_dir = ROOT / ".local" / "logs" / f"e2e-{RUN_ID}"
    log_dir.mkdir(parents=True, exist_ok=True)
    for service in SERVICES:
        stack.urls[service] = f"http://127.0.0.1:{support.free_port()}"
        stack.logs[service] = log_dir / f"{service}.log"
        stack.start(service)
    try:
        await asyncio.gather(*(stack.wait_ready(s) for s in SERVICES))
        yield stack
        await _agree(stack)  # after every test of the session: no booking left in two minds (R05)
    finally:
        for service in list(stack.procs):
            stack.stop(service)
        async with httpx.AsyncClient(timeout=10) as c:
            await c.delete(f"{support.RABBITMQ_API}/vhosts/{quote(vhost, safe='')}")
