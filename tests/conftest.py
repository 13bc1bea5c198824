"""Fixtures: servers checked by protocol with a clear message; a vhost and database prefix per test."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import aio_pika
import httpx
import pytest
from hypothesis import HealthCheck, settings
from pymongo import AsyncMongoClient

from shared.settings import ServiceSettings
from tests import support

S = TypeVar("S", bound=ServiceSettings)
RUN_ID = support.RUN_ID
# Issue 14: booking takes an AMQP command's portal from its broker user `<prefix><portal id>`; this
# run's portal users have a prefix of their own (the services under test, in-process or spawned with
# this environment, read it), deleted at the end of the run.
# Under pytest-xdist every worker is a run of its own (its own RUN_ID, so its own portal users and
# passwords): a worker inherits the controller's environment, so it must not keep the controller's prefix.
if os.environ.get("PYTEST_XDIST_WORKER") or support.PORTAL_PREFIX_ENV not in os.environ:
    os.environ[support.PORTAL_PREFIX_ENV] = f"t{RUN_ID}.portal."
# consultctl's tables (rich) are as wide as the terminal: 80 columns under xdist, where no test has one,
# which wraps the ids the tests look for; every run renders them at one width
os.environ["COLUMNS"] = "200"
for _name, _value in support.GRAPH_ENV.items():  # R16: Teams meetings from the local Graph contract server
    os.environ.setdefault(_name, _value)
_counter = itertools.count(1)

# Property tests never depend on the machine's speed: no per-example deadline, and no health check
# that fails a test because generating its examples was slow (a loaded CI machine).
settings.register_profile("project", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("project")

HINT = "Start the servers with `make infra-up` (or run `make test`, which does it)."


async def _wait_for_servers(timeout: float = 30.0) -> None:
    problems: dict[str, str] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        problems.clear()
        try:
            conn = await aio_pika.connect(support.AMQP_URL, timeout=3)
            await conn.close()
        except Exception as exc:
            problems["RabbitMQ"] = f"{support.AMQP_URL}: {exc}"
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            support.MONGODB_URL, serverSelectionTimeoutMS=3000
        )
        try:
            await client.admin.command("ping")
        except Exception as exc:
            problems["MongoDB"] = f"{support.MONGODB_URL}: {exc}"
        finally:
            await client.close()
        try:
            await asyncio.to_thread(support.check_smtp)
        except Exception as exc:
            problems["SMTP"] = f"{support.SMTP_URL}: {exc}"
        try:
            await support.check_graph()
        except Exception as exc:
            problems["Graph contract server"] = f"{support.GRAPH_URL}: {exc}"
        if not problems or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(1)
    if problems:
        lines = "\n".join(f"  {k}: {v}" for k, v in problems.items())
        pytest.fail(f"servers not answering after {timeout}s:\n{lines}\n{HINT}", pytrace=False)


@pytest.fixture(scope="session")
async def servers() -> None:
    await _wait_for_servers()


@pytest.fixture(scope="session")
async def _vhosts(servers: None) -> AsyncIterator[list[str]]:
    made: list[str] = []
    yield made
    async with httpx.AsyncClient(timeout=10) as c:
        for name in made:
            await c.delete(f"{support.RABBITMQ_API}/vhosts/{quote(name, safe='')}")
    await asyncio.to_thread(support.delete_portal_users)  # the run's portal users (issue 14)


@pytest.fixture
async def amqp_url(_vhosts: list[str]) -> AsyncIterator[str]:
    """A fresh RabbitMQ vhost for this test: its queues start empty and vanish afterwards.

    Deleted when the test ends, not at the end of the session: every vhost keeps message-store files
    open, and ~150 of them exhaust the broker's file handles (RabbitMQ then stops accepting connections).
    """
    name = f"test-{RUN_ID}-{next(_counter)}"
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.put(f"{support.RABBITMQ_API}/vhosts/{quote(name, safe='')}")
        r.raise_for_status()
        user = httpx.URL(support.RABBITMQ_API).username or "guest"
        r = await c.put(
            f"{support.RABBITMQ_API}/permissions/{quote(name, safe='')}/{user}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        r.raise_for_status()
    _vhosts.append(name)
    yield support.vhost_url(name)
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.delete(f"{support.RABBITMQ_API}/vhosts/{quote(name, safe='')}")
    if r.status_code in (204, 404):
        _vhosts.remove(name)


@pytest.fixture(scope="session")
async def _databases(servers: None) -> AsyncIterator[list[str]]:
    prefixes: list[str] = []
    yield prefixes
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(support.MONGODB_URL)
    try:
        for name in await support.database_names(client):
            if any(name.startswith(p) for p in prefixes):
                await client.drop_database(name)
    finally:
        await client.close()


@pytest.fixture
def db_prefix(_databases: list[str]) -> str:
    """Database names of this test start with this prefix; they are dropped after the run."""
    prefix = f"t{RUN_ID}_{next(_counter)}_"
    _databases.append(prefix)
    return prefix


@pytest.fixture
def make_settings(amqp_url: str, db_prefix: str) -> Callable[..., Any]:
    """Settings for a service under test, pointed at this test's vhost and databases."""

    def build(cls: type[S], **overrides: Any) -> S:
        values: dict[str, Any] = {
            "environment": "test",
            "amqp_url": amqp_url,
            "mongodb_url": support.MONGODB_URL,
            "smtp_url": support.SMTP_URL,
            "db_prefix": db_prefix,
            "outbox_poll_seconds": 0.2,
        }
        values.update(overrides)
        return cls(**values)

    return build


@pytest.fixture
async def mongo(servers: None) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(support.MONGODB_URL, tz_aware=True)
    yield client
    await client.close()


@pytest.fixture
def mailpit() -> support.Mailpit:
    return support.Mailpit()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The failure drills' figures (tests/chaos, tests/scale; issue 13: the counts per run)."""
    from tests.support.drills import FIGURES

    for section, lines in FIGURES.items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    from tests.support.servicelogs import ServiceLogs

    config.pluginmanager.register(ServiceLogs(RUN_ID), "service-logs")


# `make test` runs the suites on pytest-xdist workers with `--dist loadfile`: the tests of one file
# run in one worker, in file order (tests/chaos's drills under one stream; module-scoped fixtures).
# (`--dist loadgroup` would need xdist_group markers, which pytest-xdist 3.8 cannot apply to
# pytest 9's node ids.) Each worker is a run of its own: RUN_ID, vhosts, databases, portal users,
# and one stack of service processes if it runs tests/e2e or tests/browser.


# The services (and the console) as real processes, one stack per run (per xdist worker) for tests/e2e
# and tests/browser alike: defined once here (a conftest importing them would make a second), imported
# last because tests.support.stack reads RUN_ID.
from tests.support.stack import console, stack  # noqa: F401, E402
