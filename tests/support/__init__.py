"""Helpers the test layers share: real servers only, each test in its own vhost and databases.

This module holds the server-level helpers (settings per test, `serve`, `eventually`, Mailpit, the
Graph contract server's hooks); one module per service holds that service's harness:

    tests.support.booking      the booking harness, publish/tap on its exchange, parked messages
    tests.support.scheduler    counsellors, rooms, requests and a running scheduler
    tests.support.audit        a running audit service, its keys and `consultctl audit`
    tests.support.agreement    booking's and scheduler's view of each booking compared (R05)
    tests.support.servicelogs  what the e2e service processes logged while a test ran

The example forms and events the tests send come from `examples/` (shared with the demo and bench).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

import aio_pika
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pymongo import monitoring

from shared import serve as serving
from shared import topology
from shared.clock import OffsetClock
from shared.mongo import WATCHED, filter_shape
from shared.runtime import Runtime

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RABBITMQ_API = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/api")
MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017/")
SMTP_URL = os.environ.get("SMTP_URL", "smtp://127.0.0.1:1025")
#: the local Graph contract server (deploy/graph_contract.py, started by `make infra-up`): it answers
#: Microsoft Graph's and the identity platform's documented requests; Microsoft is not reachable here
GRAPH_URL = os.environ.get("GRAPH_CONTRACT_URL", "https://127.0.0.1:8443")
GRAPH_CA = os.environ.get(
    "GRAPH_CA_BUNDLE", str(Path(__file__).resolve().parents[2] / ".local" / "graph" / "ca.pem")
)
#: what the services under test read (in-process settings and spawned processes alike)
GRAPH_ENV = {
    "GRAPH_CREDENTIALS": json.dumps({"kushiro-gyosei": "dev-graph-secret", "demo-town": "dev-graph-secret"}),
    "GRAPH_AUTHORITY_HOST": GRAPH_URL,
    "GRAPH_BASE_URL": f"{GRAPH_URL}/v1.0",
    "GRAPH_CA_BUNDLE": GRAPH_CA,
    "MEETING_DEV_HOSTS": json.dumps([urlsplit(GRAPH_URL).hostname]),
}
MAILPIT_API = os.environ.get("MAILPIT_API", "http://127.0.0.1:8025/api/v1")

T = TypeVar("T")


def vhost_url(vhost: str) -> str:
    base = AMQP_URL.rstrip("/")
    if base.count("/") > 2:  # a vhost is already in the URL
        base = base.rsplit("/", 1)[0]
    return f"{base}/{vhost}"


#: this run's id (one per pytest process: each xdist worker is a run of its own): vhosts, database
#: prefixes, portal users and service logs are named with it
RUN_ID = uuid.uuid4().hex[:8]

#: the tests' portal users are `<this prefix><portal id>`, booking's BROKER_PORTAL_PREFIX in every
#: service under test (tests/conftest.py sets it per run), so tests never touch the real users
PORTAL_PREFIX_ENV = "BROKER_PORTAL_PREFIX"
_portal_passwords: dict[str, str] = {}  # user -> this run's password
_portal_grants: set[tuple[str, str, str]] = set()  # (management API, vhost, user) with its rights there
_portal_apis: set[str] = {RABBITMQ_API}  # the brokers the run made portal users on (chaos: its own)


def vhost_of(amqp_url: str) -> str:
    return unquote(urlsplit(amqp_url).path[1:]) or "/"


def portal_user(portal_id: str) -> str:
    return topology.portal_user(portal_id, os.environ.get(PORTAL_PREFIX_ENV, topology.PORTAL_USER_PREFIX))


async def portal_url(amqp_url: str, portal_id: str = "dev-portal", api: str = RABBITMQ_API) -> str:
    """The URL of a portal's own broker user (issue 14) on the vhost of `amqp_url`; the user is made,
    with its rights there, once per test run and vhost, through `api` (that broker's management API)."""
    from deploy import rabbitmq_users  # the one way portal users are made

    user = portal_user(portal_id)
    password = _portal_passwords.setdefault(user, uuid.uuid4().hex)
    vhost = vhost_of(amqp_url)
    if (api, vhost, user) not in _portal_grants:
        prefix = user[: -len(portal_id)]
        await asyncio.to_thread(
            rabbitmq_users.add_portal, api, vhost, portal_id, password, portal_prefix=prefix
        )
        _portal_grants.add((api, vhost, user))
        _portal_apis.add(api)
    return rabbitmq_users.amqp_url(amqp_url, user, password, vhost)


def delete_portal_users() -> None:
    """At the end of a run: the portal users it made."""
    from deploy import rabbitmq_users

    if _portal_passwords:
        for api in _portal_apis:
            with contextlib.suppress(httpx.HTTPError):  # a drill's own broker may be gone already
                rabbitmq_users.delete_users(api, list(_portal_passwords))
        _portal_passwords.clear()
        _portal_grants.clear()


@asynccontextmanager
async def portal_publisher(
    amqp_url: str, portal_id: str = "dev-portal", *, user_id: bool = True, api: str = RABBITMQ_API
) -> AsyncIterator[Callable[..., Awaitable[None]]]:
    """`publish(body, routing_key, message_id=None, headers=None)` to consult.intake as a portal
    does: logged in as its own user, `user_id` set to it (RabbitMQ checks it); `user_id=False`
    leaves the property out, as a careless portal might."""
    conn = await aio_pika.connect(await portal_url(amqp_url, portal_id, api))
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        ex = await ch.get_exchange(topology.INTAKE, ensure=False)

        async def publish(
            body: bytes,
            routing_key: str,
            message_id: str | None = None,
            headers: dict[str, Any] | None = None,
        ) -> None:
            message = aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                message_id=message_id,
                headers=headers or {},
                user_id=portal_user(portal_id) if user_id else None,
            )
            await ex.publish(message, routing_key=routing_key, mandatory=True)

        yield publish


async def publish_as_portal(
    amqp_url: str,
    body: bytes,
    routing_key: str,
    portal_id: str = "dev-portal",
    *,
    user_id: bool = True,
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
    api: str = RABBITMQ_API,
) -> None:
    """One message to consult.intake as a portal (see `portal_publisher`)."""
    async with portal_publisher(amqp_url, portal_id, user_id=user_id, api=api) as publish:
        await publish(body, routing_key, message_id, headers)


#: every wait of the tests is this many times the timeout its test names (TEST_WAIT_SCALE): a deadline
#: only says when to give up on a condition, and `make test` runs three workers on two cores, maybe
#: beside other work, so the margins a test was written with on a quiet machine are multiplied here
WAIT_SCALE = float(os.environ.get("TEST_WAIT_SCALE", "3"))


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 15.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll until the probe returns something truthy; fail with what was awaited. A probe call
    that does not return is bounded by the same deadline (it fails naming what was awaited, rather
    than hanging until pytest-timeout). The deadline is `timeout` × WAIT_SCALE."""
    timeout *= WAIT_SCALE
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                last = await probe()
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or probe}: a probe call did not return"
            ) from None
        if last:
            return last  # type: ignore[no-any-return]
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}; last={last!r}")


def asgi_client(app: FastAPI, peer: tuple[str, int] = ("127.0.0.1", 123)) -> httpx.AsyncClient:
    """HTTP to an app in this process, as if from `peer` (the socket address the app sees)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=peer), base_url="http://service")


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run an app's lifespan (broker, consumers, relays) in-process and talk HTTP to it."""
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        yield client


@asynccontextmanager
async def uvicorn_serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve an app with uvicorn on a free loopback port, in this process (a real HTTP/1.1 server,
    for what the in-process transport cannot show: connections, keep-alive); yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", proxy_headers=serving.PROXY_HEADERS
    )  # as shared.serve.run serves a service
    server = uvicorn.Server(config)

    async def serve() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits on a failed start: fail this test, not the session
            raise AssertionError(
                f"uvicorn could not start the app (exit {exc.code}): see the log above"
            ) from None

    task = asyncio.create_task(serve())

    async def started() -> bool:
        if task.done():
            task.result()  # raise why it could not start
        return server.started

    try:
        await eventually(started, timeout=30, what="uvicorn started")
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        await task


class Mailpit:
    """Reads what really reached the SMTP server, through Mailpit's HTTP API."""

    def __init__(self, api: str = MAILPIT_API) -> None:
        self.api = api.rstrip("/")

    async def search(self, query: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(f"{self.api}/search", params={"query": query, "limit": 500})
            r.raise_for_status()
            return list(r.json().get("messages", []))

    async def message(self, message_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(f"{self.api}/message/{message_id}")
            r.raise_for_status()
            return dict(r.json())

    async def to(self, address: str) -> list[dict[str, Any]]:
        return await self.search(f'to:"{address}"')


def smtp_host_port() -> tuple[str, int]:
    rest = SMTP_URL.split("://", 1)[-1].split("@")[-1]
    host, _, port = rest.partition(":")
    return host, int(port or 25)


def check_smtp(timeout: float = 3.0) -> None:
    host, port = smtp_host_port()
    with smtplib.SMTP(host, port, timeout=timeout) as s:
        s.noop()


def graph_client(**kw: Any) -> httpx.AsyncClient:
    """HTTPS to the local Graph contract server, trusting the CA it wrote."""
    return httpx.AsyncClient(base_url=GRAPH_URL, verify=ssl.create_default_context(cafile=GRAPH_CA), **kw)


async def check_graph(timeout: float = 3.0) -> None:
    async with graph_client(timeout=timeout) as client:
        r = await client.get("/kushiro-gyosei-probe/v2.0/.well-known/openid-configuration")
        if r.status_code >= 500:
            raise RuntimeError(f"openid-configuration answered {r.status_code}")


class GraphContract:
    """The contract server's test hooks (`/_contract/`): its meetings, faults and attendance."""

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        async with graph_client(timeout=10) as client:
            r = await client.request(method, f"/_contract/{path}", json=body)
            r.raise_for_status()
            return r.json() if r.content else None

    async def meetings(self) -> list[dict[str, Any]]:
        return list(await self._call("GET", "meetings"))

    async def meeting(self, external_id: str) -> dict[str, Any] | None:
        return next((m for m in await self.meetings() if m.get("externalId") == external_id), None)

    async def fault(self, match: str, status: int, *, times: int = 1, **kw: Any) -> None:
        await self._call("POST", "faults", {"match": match, "status": status, "times": times, **kw})

    async def attendance(self, meeting_id: str, records: list[dict[str, Any]]) -> None:
        await self._call("POST", "attendance", {"meeting_id": meeting_id, "records": records})

    async def requests(self) -> list[dict[str, Any]]:
        return list(await self._call("GET", "requests"))


async def database_names(client: Any) -> list[str]:
    """The server's databases; of the local FerretDB by its files (deploy.local.local_database_names
    says why listDatabases is avoided there)."""
    from deploy.local import local_database_names

    names = local_database_names(MONGODB_URL)
    return names if names is not None else list(await client.list_database_names())


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def in_ci() -> bool:
    """CI=true, as .ci/run (and most CI systems) set it."""
    return os.environ.get("CI", "").lower() in {"true", "1"}


def missing_tool(what: str, target: str) -> NoReturn:
    """A tool a test needs is not here: a developer's plain pytest run skips the test; in CI, where
    `make test` provides the tool, it fails, so that a check that never ran cannot pass as one."""
    why = f"{what} is not here: `make {target}` provides it (`make test` runs it first)"
    if in_ci():
        pytest.fail(f"{why}; CI=true, so this fails instead of skipping")
    pytest.skip(why)


def free_port() -> int:
    """A TCP port free on loopback right now (for a server a test starts itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def event_sink(amqp_url: str, key: str) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    """A queue bound to `key` on the events exchange, readable after the publisher has stopped."""
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        q = await (await conn.channel()).declare_queue(unique("sink-"), auto_delete=True)
        await q.bind(topology.EVENTS, key)
        yield q


async def received(q: aio_pika.abc.AbstractQueue) -> list[dict[str, Any]]:
    """Every message waiting in `q`, parsed and acknowledged."""
    out = []
    while (m := await q.get(fail=False, timeout=5)) is not None:
        out.append(json.loads(m.body))
        await m.ack()
    return out


class CommandShapes(monitoring.CommandListener):
    """Data commands (of some collections, or all) with their filter shape while `on` is set
    (`id`: `{_id: value}` alone, the one filter FerretDB answers without decoding the collection)."""

    def __init__(self, collections: tuple[str, ...] = ()) -> None:
        self.collections = collections
        self.on = False
        self.seen: list[tuple[str, str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        collection = str(event.command.get(name, ""))
        if self.on and name in WATCHED and (not self.collections or collection in self.collections):
            self.seen.append((name, collection, filter_shape(name, event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def scans(self) -> list[tuple[str, str, str]]:
        """What was sent with another filter than `_id` alone (inserts have none)."""
        return [q for q in self.seen if q[0] != "insert" and q[2] != "id"]


class ProcessClock:
    """The clock of service processes started with CLOCK_OFFSET_FILE, moved by the test: a timer of
    theirs comes due when the test says, however slowly the machine works."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0.0
        OffsetClock.write_offset(path, 0.0)

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def move(self, seconds: float) -> None:
        self.offset += seconds
        OffsetClock.write_offset(self.path, self.offset)

    def set(self, at: datetime) -> None:
        """From now on the processes' clock reads `at` (and runs on from there)."""
        self.move((at - self.now()).total_seconds())


# --------------------------------------------------------------------------- negative checks
#
# "Nothing more happened" cannot be waited for; it can be made certain. A service is quiet once its
# consumer has settled every delivery the test sent it and its outbox relays have nothing pending:
# whatever it published is then confirmed by the broker, i.e. in the probe's queue. A sentinel sent
# through that queue afterwards comes back behind all of it (a queue keeps its order).

SENTINEL_HEADER = "x-test-sentinel"


async def quiet(runtime: Runtime, *, settled: int = 0, timeout: float = 60.0) -> None:
    """Until `runtime`'s consumer has settled `settled` deliveries (handled, duplicate, retried or
    parked) and each outbox relay has finished a pass begun after that: whatever the deliveries
    caused has then been published and confirmed (an announced event that was never written, a lost
    conditional write, stays behind as it should until its grace period)."""

    async def settled_all() -> bool:
        return sum(runtime.consumer.stats.values()) >= settled

    await eventually(settled_all, timeout=timeout, what=f"{runtime.name}: {settled} deliveries settled")
    begun = [(r, r.scans) for r in runtime.relays]
    for relay, _ in begun:
        relay.poke()

    async def passed() -> bool:
        return all(r.scans >= n + 2 for r, n in begun)  # the pass in progress, then a whole one

    await eventually(passed, timeout=timeout, what=f"{runtime.name}: a whole outbox pass")


async def metrics_of(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A service process's /metrics: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{base_url}/metrics/")  # the mounted app answers at the slash
        r.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


async def process_quiet(
    base_url: str, *, also: Callable[[dict[Any, float]], bool] | None = None, timeout: float = 60.0
) -> None:
    """Negative checks on a service PROCESS (`quiet` is the in-process one): `also` holds (e.g. no
    timer left to fire) and each outbox relay has then finished two whole passes, the last with no
    backlog, so whatever the service had to publish has been published and confirmed."""

    def passes(m: dict[Any, float]) -> dict[Any, float]:
        return {labels: v for (name, labels), v in m.items() if name == "consult_outbox_scans_total"}

    def idle(m: dict[Any, float]) -> bool:
        backlog = [v for (name, _), v in m.items() if name == "consult_outbox_backlog"]
        return all(v == 0 for v in backlog) and (also is None or also(m))

    seen: dict[Any, float] = {}

    async def ready() -> tuple[dict[Any, float]] | None:
        m = await metrics_of(base_url)
        seen.clear()
        seen.update({labels: v for (name, labels), v in m.items() if name == "consult_outbox_backlog" and v})
        return (passes(m),) if idle(m) else None  # a tuple: truthy even for a service without relays

    try:
        (begun,) = await eventually(ready, timeout=timeout, what=f"{base_url}: nothing left to do or publish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; outbox backlogs at the last look: {seen or 'none'}") from None

    async def passed() -> bool:
        m = await metrics_of(base_url)
        done = passes(m)
        return idle(m) and all(done.get(labels, 0) >= n + 2 for labels, n in begun.items())

    await eventually(passed, timeout=timeout, what=f"{base_url}: two whole outbox passes, no backlog")


def sentinel_of(message: aio_pika.abc.AbstractIncomingMessage) -> str | None:
    value = (message.headers or {}).get(SENTINEL_HEADER)
    return str(value) if value is not None else None


async def flush(
    channel: aio_pika.abc.AbstractChannel, queue: str, back: set[str], timeout: float = 30.0
) -> None:
    """Send a sentinel through a probe queue whose consumer adds `sentinel_of(message)` to `back`;
    return once it is back, so everything confirmed into the queue before has been delivered."""
    token = uuid.uuid4().hex
    message = aio_pika.Message(b"{}", headers={SENTINEL_HEADER: token})
    await channel.default_exchange.publish(message, routing_key=queue, timeout=timeout)  # the confirm

    async def returned() -> bool:
        return token in back

    await eventually(returned, timeout=timeout, what=f"the sentinel through {queue}")
