"""Failure drills under one stream of bookings, against a dedicated stack (issue 7).

One stream of 500 KG bookings (`CHAOS_BOOKINGS`, paced by `CHAOS_PACE` so it outlasts the drills)
runs in the background while the tests of this module perform the drills one at a time, in file
order; the last test waits for the stream and checks the invariants. The module takes ~3.5–4 min on
the 2-core dev machine (measured: 500 submitted in ~190 s, all final ~215 s after the start). Counts
and the portal's answers are printed (`pytest -s`).

The stack is entirely our own, so no drill touches the servers other engineers' tests share: the
four services as processes (tests.support.stack.Stack), our OWN RabbitMQ node (rabbitmq-server with
its own node name, ports and data dir; ~5 s to start), our OWN FerretDB (ferretdb-local on a free
port, temp data dir) and our OWN Mailpit (free SMTP/API ports). Drills:

- kill -9 each service in turn mid-stream, then restart it;
- every AMQP connection of the stack's vhost force-closed through the management API
  (DELETE /api/connections/{name}); the broker stays up, so the services reconnect at once and
  /readyz may never be seen 503 (recorded, not required); every service must reconnect;
- "RabbitMQ killed while confirmed publishes are in flight": our own node's Erlang VM is kill -9'd
  mid-stream and restarted on the same data 5 s later; every /readyz must answer 503 within 10 s
  (seen after ~2.3 s) and 200 again afterwards;
- the MongoDB-wire server (our FerretDB) is SIGSTOPped for 10 s, then SIGCONTed;
- SMTP (our Mailpit) is killed for 30 s, then restarted on the same ports and database;
- the notifier gets SIGTERM with messages in flight (graceful: acked or requeued; nothing lost is
  checked at the end: every confirmed booking mailed once, notifier.parking empty);
- a poison `booking.request` (unreadable body) reaches booking.parking (reason invalid-event) while
  the stream keeps flowing;
- an unroutable publish (EventPublisher, a vhost where nothing is bound) raises, and an outbox event
  relayed there stays pending (outbox_pending true, outbox_sent 0).

Final / stable states (what every accepted booking must end in; nothing left `requested`):
  confirmed — the scheduler coordinated a slot;
  recoordination_proposed — the wished windows were full, alternatives held for the person;
  awaiting_coordination — the held alternatives expired: staff take over (stable until a human acts);
  rejected — refused by a rule.
KG windows 09:00–17:00 on open days from two weeks ahead, ~6 bookings a day, so there is capacity
and no no-show timer fires. Checked afterwards: every confirmed booking got exactly one email (KG
sends it on booking.confirmed; each booking has its own recipient address) and nobody got two; the
audit store holds exactly one booking.requested per booking and one booking.confirmed per confirmed
booking; the audit hash chains verify; every /readyz is 200 and notifier.parking is empty.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aio_pika
import httpx
import pytest
from aio_pika.exceptions import DeliveryError
from faststream.rabbit import Channel, RabbitBroker
from pymongo import AsyncMongoClient

from deploy.rabbit_cluster import Node
from examples import forms
from shared import topology
from shared.clock import SystemClock
from shared.events import DeviceRecorded, new_event
from shared.messaging import EventPublisher
from shared.settings import ServiceSettings
from shared.store.outbox import OutboxRelay, new_document_fields
from tests import support
from tests.chaos import figure
from tests.support import RUN_ID, agreement, drills, free_port
from tests.support.drills import FINAL
from tests.support.stack import (
    AUDITOR_KEY,
    BOOKING_STAFF_KEY,
    PORTAL_KEY,
    ROOT,
    SCHEDULER_STAFF_KEY,
    SERVICES,
    Stack,
    parked_body,
    stack_env,
)

BOOKINGS = int(os.environ.get("CHAOS_BOOKINGS", "500"))
#: seconds between two submissions: the stream must outlast the drills (~2 min)
PACE = float(os.environ.get("CHAOS_PACE", str(max(0.05, 110 / max(BOOKINGS, 1)))))
OFFICE = "kushiro-gyosei"
AUDITOR = {"Authorization": f"Bearer {AUDITOR_KEY}"}


@dataclass
class Chaos:
    stack: Stack
    rabbit: Node
    vhost: str
    servers: drills.PrivateServers
    submitted: list[dict[str, Any]] = field(default_factory=list)
    stream: asyncio.Task[None] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: bookings whose notice was between claim and mark when the notifier or SMTP was killed
    in_flight: dict[str, set[str]] = field(default_factory=dict)

    @property
    def mongodb_url(self) -> str:
        return self.servers.mongodb_url

    async def note_in_flight(self, what: str) -> None:
        self.in_flight[what] = await drills.notices_in_flight(self.mongodb_url, self.stack.db_prefix)


@pytest.fixture(scope="module")
async def chaos() -> AsyncIterator[Chaos]:
    drills.require_binaries()
    tmp = Path(tempfile.mkdtemp(prefix=f"chaos-{RUN_ID}-"))
    log_dir = ROOT / ".local" / "logs" / f"chaos-{RUN_ID}"
    log_dir.mkdir(parents=True, exist_ok=True)
    servers = drills.PrivateServers(tmp, log_dir)
    rabbit = Node(
        f"chaos{RUN_ID}@localhost",
        tmp / "rabbit",
        free_port(),
        free_port(),
        free_port(),
        log_dir / "rabbitmq.log",
    )
    rabbit.start()
    try:
        await asyncio.gather(servers.start(), drills.node_ready(rabbit, 90))
    except BaseException:
        rabbit.kill()
        servers.stop()
        raise
    vhost = "chaos"
    await drills.vhost(rabbit.api, vhost)
    amqp_url = f"amqp://guest:guest@127.0.0.1:{rabbit.amqp_port}/{vhost}"
    prefix = f"chaos{RUN_ID}_"
    env = stack_env(amqp_url, prefix) | {"MONGODB_URL": servers.mongodb_url, "SMTP_URL": servers.smtp_url}
    stack = Stack(amqp_url=amqp_url, db_prefix=prefix, env=env)
    for service in SERVICES:
        stack.urls[service] = f"http://127.0.0.1:{free_port()}"
        stack.logs[service] = log_dir / f"{service}.log"
        stack.start(service)
    state = Chaos(stack, rabbit, vhost, servers)
    try:
        await asyncio.gather(*(stack.wait_ready(s) for s in SERVICES))
        yield state
    finally:
        if state.stream is not None and not state.stream.done():
            state.stream.cancel()
        for service in list(stack.procs):
            stack.stop(service)
        rabbit.kill()
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------- the stream


async def run_stream(chaos: Chaos) -> None:
    policy = ServiceSettings().policies()[OFFICE]
    days = drills.open_days(OFFICE, BOOKINGS)
    now = SystemClock().now()
    started = time.monotonic()
    async with chaos.stack.client("booking", headers={"Authorization": f"Bearer {PORTAL_KEY}"}) as portal:
        for i in range(BOOKINGS):
            email = f"chaos{i}.{uuid.uuid4().hex[:8]}@example.jp"
            form = forms.kg_form(policy, days[i % len(days)], now, window=("09:00", "17:00"), email=email)
            r = await drills.submit(portal, OFFICE, form, f"chaos-{RUN_ID}-{i}")
            chaos.submitted.append({**r.json(), "email": email, "http": r.status_code})
            await asyncio.sleep(PACE)
    chaos.timings["stream_submit_s"] = time.monotonic() - started


# ----------------------------------------------------------------- helpers


async def readyz(stack: Stack, service: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            return (await c.get(f"{stack.urls[service]}/readyz")).status_code
    except httpx.HTTPError:
        return 0


async def kill_and_restart(chaos: Chaos, service: str) -> None:
    await asyncio.sleep(2)  # let the stream put messages in flight
    chaos.stack.stop(service, kill=True)
    if service == "notifier":
        await chaos.note_in_flight("notifier kill -9")
    await asyncio.sleep(1)
    chaos.stack.start(service)
    await chaos.stack.wait_ready(service, timeout=90)


async def vhost_connections(api: str, vhost: str) -> list[str]:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{api}/vhosts/{quote(vhost, safe='')}/connections")
        r.raise_for_status()
        return [x["name"] for x in r.json()]


async def close_connections(api: str, vhost: str) -> int:
    names = await vhost_connections(api, vhost)
    async with httpx.AsyncClient(timeout=10) as c:
        for name in names:
            await c.delete(
                f"{api}/connections/{quote(name, safe='')}",
                headers={"X-Reason": "chaos drill: broker outage"},
            )
    return len(names)


def _body(queue: str, message: dict[str, Any]) -> bytes:
    """The parked body, opened with the parking service's key (R12: parked copies rest sealed)."""
    return parked_body(queue, message)


async def publish_intake(chaos: Chaos, routing_key: str, body: bytes) -> str:
    """As the dev portal's own user on the drill's own broker."""
    message_id = f"poison-{uuid.uuid4().hex[:8]}"
    await support.publish_as_portal(
        chaos.stack.amqp_url, body, routing_key, message_id=message_id, api=chaos.rabbit.api
    )
    return message_id


# ----------------------------------------------------------------- drills, in order


async def test_stream_starts(chaos: Chaos) -> None:
    chaos.stream = asyncio.create_task(run_stream(chaos), name="chaos-stream")
    chaos.timings["start"] = time.monotonic()
    await support.eventually(
        lambda: asyncio.sleep(0, len(chaos.submitted) >= 3), timeout=60, what="3 bookings"
    )


async def test_poison_booking_request_is_parked_while_the_rest_flow(chaos: Chaos) -> None:
    mark = uuid.uuid4().hex.encode()
    await publish_intake(chaos, "booking.request", b"\xff\xfe{not json " + mark)

    async def poison() -> list[dict[str, Any]]:  # the parked copy keeps the body (not the message_id)
        got = await drills.parked(chaos.rabbit.api, chaos.vhost, "booking.parking")
        return [m for m in got if mark in _body("booking.parking", m)]

    [found] = await support.eventually(poison, timeout=30, what="the poison parked")
    assert found["properties"]["headers"][topology.REASON_HEADER] == "invalid-event"
    assert chaos.stream is not None and not chaos.stream.done(), "the stream ended before the drill"


@pytest.mark.parametrize("service", SERVICES)
async def test_kill_9_each_service_mid_stream_and_restart(chaos: Chaos, service: str) -> None:
    await kill_and_restart(chaos, service)
    assert chaos.stream is not None and not chaos.stream.done(), "the stream ended before the drill"


async def test_broker_connections_force_closed_mid_stream_reconnect(chaos: Chaos) -> None:
    """Every AMQP connection of the stack's vhost force-closed (DELETE /api/connections/{name}).

    The broker itself stays up, so a service may reconnect before /readyz is ever asked: a 503 is
    recorded when seen but not required here; the sustained outage (kill -9) below requires it.
    """
    seen: dict[str, float] = {}

    async def listed() -> list[str]:  # the management API lists a new connection a few seconds late
        names = await vhost_connections(chaos.rabbit.api, chaos.vhost)
        return names if len(names) >= len(SERVICES) else []

    before = set(await support.eventually(listed, timeout=20, interval=0.5, what="every connection listed"))
    t0 = time.monotonic()
    closed = await close_connections(chaos.rabbit.api, chaos.vhost)

    async def watch(service: str) -> None:
        while time.monotonic() - t0 < 5:
            if await readyz(chaos.stack, service) == 503:
                seen[service] = time.monotonic() - t0
                return
            await asyncio.sleep(0.1)

    await asyncio.gather(*(watch(s) for s in SERVICES))
    for service in SERVICES:
        await chaos.stack.wait_ready(service, timeout=60)

    async def reconnected() -> list[str]:
        names = await listed()
        return names if len(set(names) - before) >= len(SERVICES) else []

    await support.eventually(reconnected, timeout=30, interval=0.5, what="every service reconnected")
    figure(f"\nchaos: force-closed {closed} connections; 503 seen {seen}; all reconnected")


async def test_broker_kill_9_with_confirmed_publishes_in_flight(chaos: Chaos) -> None:
    """Our own RabbitMQ node is killed -9 mid-stream and restarted on the same data 5 s later."""
    t0 = time.monotonic()
    chaos.rabbit.kill()
    seen: dict[str, float] = {}

    async def watch(service: str) -> None:
        while time.monotonic() - t0 < 10:
            if await readyz(chaos.stack, service) == 503:
                seen[service] = time.monotonic() - t0
                return
            await asyncio.sleep(0.2)

    await asyncio.gather(*(watch(s) for s in SERVICES))
    await asyncio.sleep(max(0.0, 5 - (time.monotonic() - t0)))
    chaos.rabbit.start()
    await drills.node_ready(chaos.rabbit, 90)
    for service in SERVICES:
        await chaos.stack.wait_ready(service, timeout=90)
    figure(f"\nchaos: broker kill -9; 503 after {seen}; all ready {time.monotonic() - t0:.0f}s later")
    stayed = set(SERVICES) - set(seen)
    assert not stayed, f"/readyz stayed 200 with the broker dead for {stayed}"


async def test_mongodb_wire_server_stopped_10s(chaos: Chaos) -> None:
    chaos.servers.ferret.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(10)
    finally:
        chaos.servers.ferret.signal(signal.SIGCONT)
    resumed = time.monotonic()
    ready: dict[str, float] = {}

    async def wait(service: str) -> None:
        await chaos.stack.wait_ready(service, timeout=60)
        ready[service] = round(time.monotonic() - resumed, 1)

    await asyncio.gather(*(wait(s) for s in SERVICES))
    figure(f"\nchaos: FerretDB paused 10 s; ready again after SIGCONT (s): {ready}")


async def test_smtp_down_30s(chaos: Chaos) -> None:
    chaos.servers.mailpit.kill()
    await chaos.note_in_flight("SMTP kill -9")
    await asyncio.sleep(30)
    chaos.servers.mailpit.start()
    await drills.wait_port(chaos.servers.smtp_port)


async def test_notifier_sigterm_with_messages_in_flight(chaos: Chaos) -> None:
    await asyncio.sleep(1)
    chaos.stack.stop("notifier")  # SIGTERM: graceful, every delivery acked or requeued
    chaos.stack.start("notifier")
    await chaos.stack.wait_ready("notifier", timeout=90)


async def test_unroutable_publish_raises_and_the_outbox_event_stays_pending(chaos: Chaos) -> None:
    """A vhost with consult.events but no queue bound: nothing can route there."""
    vhost = "chaos-unroutable"
    await drills.vhost(chaos.rabbit.api, vhost)
    url = f"amqp://guest:guest@127.0.0.1:{chaos.rabbit.amqp_port}/{vhost}"
    connection = await aio_pika.connect(url)
    async with connection:
        await topology.declare_exchanges(await connection.channel())
    broker = RabbitBroker(url, default_channel=Channel(on_return_raises=True))  # as shared.runtime
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(chaos.mongodb_url, tz_aware=True)
    try:
        await broker.connect()
        publisher = EventPublisher(broker)
        payload = DeviceRecorded(
            booking_id="chaos-unroutable", portal_id="kg-portal", user_agent="chaos",
            ip_address="203.0.113.9",
            device_id="DEV-CHAOS", app_version="1", observed_at=datetime.now(UTC),
        )  # fmt: skip
        event = new_event(payload, office_id=OFFICE, producer="booking", clock=SystemClock())
        with pytest.raises(DeliveryError) as raised:
            await publisher.publish(event)
        figure(f"\nchaos: unroutable publish raised {type(raised.value).__name__}: {raised.value}")
        coll = mongo[f"chaos{RUN_ID}_outboxdrill"]["docs"]
        await coll.insert_one({"_id": "doc-1", **new_document_fields([event])})
        relay = OutboxRelay(coll, publisher, poll_seconds=0.2)
        with pytest.raises(DeliveryError):
            await relay.drain_once()
        doc = await coll.find_one({"_id": "doc-1"})
        assert doc is not None and doc["outbox_pending"] is True and doc["outbox_sent"] == 0
    finally:
        await broker.stop()
        await mongo.close()


# ----------------------------------------------------------------- after the stream


@pytest.mark.timeout(1200)  # it waits for the rest of the stream: minutes with CHAOS_BOOKINGS=500
async def test_after_the_stream_every_booking_is_final_mailed_once_and_audited_once(chaos: Chaos) -> None:
    assert chaos.stream is not None
    await asyncio.wait_for(chaos.stream, timeout=600)
    stack = chaos.stack
    for service in SERVICES:
        await stack.wait_ready(service, timeout=60)
    accepted = [b for b in chaos.submitted if b["http"] in (200, 202)]
    statuses: dict[str, str] = {}
    async with stack.client("booking", headers={"Authorization": f"Bearer {PORTAL_KEY}"}) as portal:

        async def settled() -> bool:
            for b in accepted:
                if statuses.get(b["booking_id"]) not in FINAL:
                    r = await portal.get(f"/v1/bookings/{b['booking_id']}")
                    if r.status_code == 200:
                        statuses[b["booking_id"]] = r.json()["status"]
            return all(statuses.get(b["booking_id"]) in FINAL for b in accepted)

        try:
            # generous: after the broker kill and the SMTP outage, retries can still be in delay queues
            await support.eventually(settled, timeout=420, interval=1, what="every booking final")
        except AssertionError:
            stuck = {b["booking_id"]: statuses.get(b["booking_id"]) for b in accepted}
            stuck = {k: v for k, v in stuck.items() if v not in FINAL}
            raise AssertionError(f"{len(stuck)} booking(s) not final: {stuck}") from None
    counts = Counter(statuses.values())
    email_of = {b["booking_id"]: b["email"] for b in accepted}
    async with (
        stack.client("booking", headers={"Authorization": f"Bearer {BOOKING_STAFF_KEY}"}) as staff,
        stack.client("scheduler", headers={"X-Staff-Key": SCHEDULER_STAFF_KEY}) as scheduler,
    ):
        agreed = await agreement.check(staff, scheduler, [OFFICE])  # R05: never in two minds
    assert agreed >= len(accepted)

    confirmed = [bid for bid, s in statuses.items() if s == "confirmed"]
    mail = await drills.check_mail(
        chaos.servers.mailpit_api,
        lambda: drills.deliveries(chaos.mongodb_url, stack.db_prefix),
        chaos.in_flight,
        email_of,
        confirmed,
    )
    figure(
        f"\nchaos: email duplicates {mail.duplicates}, ambiguous resends counted {mail.ambiguous}, "
        f"in flight at the kills { ({k: len(v) for k, v in chaos.in_flight.items()}) }"
    )
    async with stack.client("audit", headers=AUDITOR) as audit:
        requested = Counter(r["booking_id"] for r in await drills.all_records(audit, "booking.requested"))
        confirmations = Counter(r["booking_id"] for r in await drills.all_records(audit, "booking.confirmed"))
        report = (await audit.get("/v1/audit/verify")).json()
    elapsed = time.monotonic() - chaos.timings["start"]
    figure(
        f"\nchaos: {len(chaos.submitted)} submitted, {len(accepted)} accepted, final states {dict(counts)}; "
        f"{mail.mails} mails; audit booking.requested {sum(requested.values())}; "
        f"submit {chaos.timings.get('stream_submit_s', 0):.0f}s, whole run {elapsed:.0f}s; answers "
        f"{dict(Counter((b['http'], b.get('error') or b.get('rule')) for b in chaos.submitted))}"
    )
    assert len(chaos.submitted) == BOOKINGS
    refused = Counter(b.get("error") for b in chaos.submitted if b["http"] not in (200, 202))
    assert not refused, f"the stream's bookings are all valid, yet some were refused: {refused}"
    assert counts["confirmed"] > 0
    missing = {b: requested[b] for b in email_of if requested[b] != 1}
    assert not missing, f"booking.requested records per booking != 1: {missing}"
    assert all(confirmations[b] == 1 for b in confirmed), "booking.confirmed records per confirmed != 1"
    assert report["ok"], report.get("first_problem")
    for service in SERVICES:
        assert await readyz(stack, service) == 200
    assert not (await drills.queue_info(chaos.rabbit.api, chaos.vhost, "notifier.parking"))["messages"], (
        "notifier parked messages"
    )
