"""Past one machine (issue 20): a 3-node RabbitMQ cluster, two replicas of every service, and node
and replica failures under a stream of bookings, with nothing lost.

One module-scoped start-up serves every drill: our OWN 3-node cluster (deploy/rabbit_cluster.py:
Debian's rabbitmq-server, node names `scale<run>-1..3@localhost`, free ports, one Erlang cookie,
quorum queues of three members, the topology and least-privilege users of deploy/rabbitmq_users.py),
HAProxy (Debian's, `make haproxy-binary`) in front of the nodes for AMQP and of each service's two
replicas for HTTP, our OWN FerretDB and Mailpit (tests.support.drills.PrivateServers), and the four
services twice each (`booking-1`, `booking-2`, ...), each service as its own broker user through
HAProxy. The shared servers of the other tests are never touched.

The stream (`SCALE_BOOKINGS`, 500) is cut into one part per drill; a drill's part runs while the
drill does (its last tenth waits until the drill is over, so the last bookings go through the
recovered system), then everything is checked over every booking so far:

1. kill -9 the node that leads most quorum queues; restart it once a booking submitted after the
   kill has completed (the clients' connections are on the live nodes by then);
2. kill -9 one replica of each service in turn (the scheduler's lease holder: the active timer
   wheel), restarting each before the next;
3. a rolling restart: each node in turn stopped gracefully (SIGTERM) once it is not quorum-critical,
   started again, and the next only once all three run and every quorum queue has three members.

After each: every booking final; booking and the scheduler agree on each (tests/support/agreement.py);
every confirmed KG booking has one confirmation email (a second only as a counted ambiguous resend of
a notice in flight at a notifier kill, as in tests/chaos); every timer due has fired or been
cancelled, each hold timer's event is in the audit store once; one audit record per event (no event
id twice; one booking.requested per booking, one booking.confirmed per confirmed one); the chains
verify, with both audit replicas writing; no message unacknowledged, waiting in an inbox, or parked.

Timers: one pair of demo-town bookings in every `DEMO_EVERY` (its own day, the same half hour: the
office has one counsellor there, alternatives held for one minute): the second gets alternatives,
whose hold timer fires a minute later (through whichever scheduler holds the lease) and leaves it
awaiting coordination. KG bookings are two weeks ahead: their timers do not come due.

The module takes ~15 min on the loaded 2-core machine (14.7 min measured: start-up 45 s, the drills
3.4, 4.5 and 6 min with their checks).

Figures (printed at the end of the run): per drill the counts, each failover (kill or stop to the
next completed booking: the first booking submitted after it that reaches a final state, seen by
a poll every second) and their p50/p99, the latency of the bookings submitted in the 30 s after each
failover against the others', the scheduler lease take-over time.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from deploy import local
from deploy.rabbit_cluster import Cluster, Node, Ports
from examples import forms
from shared.calendar import jst_date
from shared.clock import SystemClock
from shared.policy import load_file
from shared.settings import ServiceSettings
from tests import support
from tests.support import RUN_ID, agreement, drills, free_port
from tests.support.drills import FINAL, KG, percentile
from tests.support.scheduler import DEMO_OFFICES
from tests.support.stack import (
    AUDITOR_KEY,
    BOOKING_STAFF_KEY,
    PORTAL_KEY,
    ROOT,
    SCHEDULER_STAFF_KEY,
    SERVICES,
    Stack,
    stack_env,
)

BOOKINGS = int(os.environ.get("SCALE_BOOKINGS", "500"))
#: seconds between two submissions at least; each drill's part is spread over the drill's length
PACE = float(os.environ.get("SCALE_PACE", "0.2"))
DEMO = "demo-town"
#: submissions in flight at once (as several portals send)
LANES = 4
DEMO_EVERY = 25  # bookings i with i % DEMO_EVERY in (0, 1): a demo-town pair, one hold timer
SECTION = "scale drill figures"
REPLICAS = {service: (f"{service}-1", f"{service}-2") for service in SERVICES}
#: a booking no drill moves any further: what the settled check waits for
STABLE = frozenset({"confirmed", "awaiting_coordination", "rejected"})
PORTAL = {"Authorization": f"Bearer {PORTAL_KEY}"}
#: the module's one start-up counts in its first test's time; a drill takes minutes on a loaded machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def figure(line: str) -> None:
    drills.figure(line, SECTION)


@dataclass
class Sent:
    index: int
    office: str
    email: str
    submitted: float  # monotonic
    http: int = 0
    booking_id: str = ""
    status: str = ""
    final_at: float | None = None  # monotonic, when the poll first saw a final state

    def settled(self) -> bool:
        return self.status in STABLE or (self.office == KG and self.status in FINAL)


@dataclass
class Scale:
    cluster: Cluster
    stack: Stack
    servers: drills.PrivateServers
    sent: list[Sent] = field(default_factory=list)
    in_flight: dict[str, set[str]] = field(default_factory=dict)
    #: drill -> (what failed, seconds from the kill or stop to the next completed booking)
    failovers: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    kills: list[float] = field(default_factory=list)  # monotonic times of every kill and stop
    watcher: asyncio.Task[None] | None = None

    @property
    def prefix(self) -> str:
        return self.stack.db_prefix

    def mongo(self) -> AsyncMongoClient[dict[str, Any]]:
        return AsyncMongoClient(self.servers.mongodb_url, tz_aware=True)

    def accepted(self) -> list[Sent]:
        return [s for s in self.sent if s.http in (200, 202)]


def replica_urls(ports: dict[str, int]) -> dict[str, str]:
    return {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}


@pytest.fixture(scope="module")
async def scale() -> AsyncIterator[Scale]:
    if local.unpacked("haproxy") is None:
        support.missing_tool("haproxy", "haproxy-binary")
    drills.require_binaries()
    tmp = Path(tempfile.mkdtemp(prefix=f"scale-{RUN_ID}-"))
    log_dir = ROOT / ".local" / "logs" / f"scale-{RUN_ID}"
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for pair in REPLICAS.values() for name in pair}
    cluster = Cluster(tmp / "cluster", Ports.free(free_port), tag=f"scale{RUN_ID}", logs=log_dir)
    cluster.http = {s: (free_port(), [ports[r] for r in REPLICAS[s]]) for s in SERVICES}
    servers = drills.PrivateServers(tmp, log_dir)
    prefix = f"scale{RUN_ID}_"
    stack = Stack(amqp_url="", db_prefix=prefix)
    state = Scale(cluster, stack, servers)
    t0 = time.monotonic()
    try:
        passwords, _ = await asyncio.gather(asyncio.to_thread(cluster.up, 240), servers.start())
        started = time.monotonic() - t0
        stack.amqp_url = cluster.url("booking", passwords)
        stack.env = stack_env(stack.amqp_url, prefix) | {
            "MONGODB_URL": servers.mongodb_url,
            "SMTP_URL": servers.smtp_url,
        }
        stack.urls = replica_urls(ports) | {s: f"http://127.0.0.1:{p}" for s, (p, _) in cluster.http.items()}
        for service, pair in REPLICAS.items():
            for name in pair:
                stack.modules[name] = service
                stack.envs[name] = {"AMQP_URL": cluster.url(service, passwords)}  # its own user (R12)
                stack.logs[name] = log_dir / f"{name}.log"
                stack.start(name)
        await asyncio.gather(*(stack.wait_ready(r, timeout=300) for pair in REPLICAS.values() for r in pair))
        figure(
            f"\nscale: cluster of 3 and private servers up in {started:.0f}s, "
            f"8 replicas ready {time.monotonic() - t0:.0f}s after the start"
        )
        state.watcher = asyncio.create_task(watch(state), name="scale-watch")
        yield state
    finally:
        if state.watcher is not None:
            state.watcher.cancel()
        for name in list(stack.procs):
            stack.stop(name, kill=True)
        cluster.down(graceful=False)
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------- the stream and its watcher


async def watch(scale: Scale) -> None:
    """Every second: the status of every booking not settled yet, and when it first was final."""
    async with scale.stack.client("booking", headers=PORTAL) as portal:
        while True:
            for s in [s for s in scale.sent if s.booking_id and not s.settled()]:
                try:
                    r = await portal.get(f"/v1/bookings/{s.booking_id}")
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    s.status = r.json()["status"]
                    if s.final_at is None and s.status in FINAL:
                        s.final_at = time.monotonic()
            await asyncio.sleep(1)


def form_for(i: int) -> tuple[str, dict[str, Any]]:
    """Booking i of the stream: KG (~6 a day, two weeks ahead), or one of a demo-town pair."""
    now = SystemClock().now()
    email = f"scale{i}.{uuid.uuid4().hex[:8]}@example.jp"
    if i % DEMO_EVERY in (0, 1):
        demo = load_file(DEMO_OFFICES / f"{DEMO}.yaml")
        day = jst_date(now) + timedelta(days=20 + i // DEMO_EVERY)  # a day of the pair's own
        return DEMO, forms.kg_form(demo, day, now, window=("10:00", "10:30"), email=email)
    policy = ServiceSettings().policies()[KG]
    days = drills.open_days(KG, BOOKINGS)
    return KG, forms.kg_form(policy, days[i % len(days)], now, window=("09:00", "17:00"), email=email)


async def stream(scale: Scale, n: int, seconds: float, drill_over: asyncio.Event) -> None:
    """About n bookings spread over about `seconds`: submitted for as long as the drill runs (more
    than n if it runs longer than `seconds`, so that every failover has bookings after it), then
    the rest of the n, at least a tenth of them, through the recovered system. Up to LANES are in
    flight at once, as several portals send: one request held up (a killed booking replica's
    claim is taken over only after CLAIM_STALE_SECONDS) does not hold up the others."""
    pace = max(PACE, seconds / max(n, 1))
    tail = max(1, n // 10)
    lanes = asyncio.Semaphore(LANES)
    flying: list[asyncio.Task[None]] = []

    async def send(portal: httpx.AsyncClient, entry: Sent, form: dict[str, Any]) -> None:
        try:
            r = await drills.submit(portal, entry.office, form, f"scale-{RUN_ID}-{entry.index}")
            entry.http, entry.booking_id = r.status_code, r.json().get("booking_id", "")
        finally:
            lanes.release()

    sent, over_at = 0, None  # over_at: how many had been sent when the drill was over
    async with scale.stack.client("booking", headers=PORTAL) as portal:
        while True:
            if over_at is None and drill_over.is_set():
                over_at = sent
            if over_at is not None and sent >= max(n, over_at + tail):
                break
            await lanes.acquire()
            i = len(scale.sent)
            office, form = form_for(i)
            entry = Sent(i, office, form["email"], time.monotonic())
            scale.sent.append(entry)
            flying.append(asyncio.create_task(send(portal, entry, form), name=f"booking-{i}"))
            sent += 1
            await asyncio.sleep(pace)
        await asyncio.gather(*flying)


async def next_completed(scale: Scale, t0: float, what: str) -> float:
    """Seconds from t0 (a kill or stop) to the first booking submitted after it becoming final."""

    async def done() -> list[float]:
        return [s.final_at - t0 for s in scale.sent if s.submitted >= t0 and s.final_at is not None]

    return min(
        await support.eventually(done, timeout=300, interval=0.5, what=f"a booking completed after {what}")
    )


async def drill(
    scale: Scale, name: str, n: int, seconds: float, action: Callable[[], Awaitable[None]]
) -> None:
    """Run `action` under n bookings of the stream, then check everything (`check_after`)."""
    over = asyncio.Event()
    part = asyncio.create_task(stream(scale, n, seconds, over), name=f"stream-{name}")
    start = len(scale.sent)
    try:
        # a few bookings in before the drill strikes
        await support.eventually(
            lambda: asyncio.sleep(0, len(scale.sent) - start >= min(10, n)),
            timeout=120,
            what="10 bookings sent",
        )
        await action()
    finally:
        over.set()
    await asyncio.wait_for(part, timeout=1200)
    await check_after(scale, name)


def part(drill_number: int) -> int:
    """The drill's share of the stream (the last one takes the rest)."""
    share = BOOKINGS // 3
    return share if drill_number < 3 else BOOKINGS - 2 * share


async def failed_over(scale: Scale, drill_name: str, what: str, t0: float) -> float:
    took = await next_completed(scale, t0, what)
    scale.failovers.setdefault(drill_name, []).append((what, took))
    scale.kills.append(t0)
    return took


# ----------------------------------------------------------------- the cluster and its clients


def cluster_view(scale: Scale) -> tuple[Counter[str], list[dict[str, Any]]]:
    queues = [q for q in scale.cluster.queues() if q.get("type") == "quorum"]
    return Counter(str(q.get("leader")) for q in queues), queues


async def all_members_online(scale: Scale, timeout: float = 300) -> None:
    """Every quorum queue has its three members online again (the restarted node caught up)."""

    def whole() -> bool:
        try:
            _, queues = cluster_view(scale)
        except (httpx.HTTPError, RuntimeError):
            return False
        return bool(queues) and all(len(q.get("online", [])) == 3 for q in queues)

    await support.eventually(
        lambda: asyncio.to_thread(whole),
        timeout=timeout,
        interval=1,
        what="every quorum queue with 3 members online",
    )


async def connections(scale: Scale) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(
            f"{await asyncio.to_thread(scale.cluster.live_api)}/connections", params={"columns": "user,node"}
        )
        r.raise_for_status()
        return list(r.json())


async def clients_on_live_nodes(scale: Scale, dead: Node) -> None:
    """Through HAProxy every service user is connected again, and nobody to the dead node."""

    async def moved() -> bool:
        try:
            conns = await connections(scale)
        except (httpx.HTTPError, RuntimeError):
            return False
        users = {c["user"] for c in conns if c["node"] != dead.name}
        return set(SERVICES) <= users and not any(c["node"] == dead.name for c in conns)

    await support.eventually(
        moved, timeout=120, interval=1, what=f"every service reconnected off {dead.name}"
    )


async def restart_node(scale: Scale, node: Node) -> float:
    t0 = time.monotonic()
    node.start()
    await support.eventually(
        lambda: asyncio.to_thread(scale.cluster.running, node), timeout=300, interval=1,
        what=f"{node.name} back in the cluster of 3",
    )  # fmt: skip
    await all_members_online(scale)
    return time.monotonic() - t0


# ----------------------------------------------------------------- the drills, in order


async def test_the_cluster_has_three_nodes_quorum_queues_of_three_and_each_service_its_own_user(
    scale: Scale,
) -> None:
    leaders, queues = await asyncio.to_thread(cluster_view, scale)
    assert queues, "no quorum queue in the vhost"
    assert all(len(q.get("members", [])) == 3 for q in queues), {q["name"]: q.get("members") for q in queues}
    assert len(leaders) == 3, f"leaders not spread over the three nodes: {leaders}"
    users: Counter[str] = Counter()

    async def listed() -> bool:  # the management API lists a new connection a few seconds late
        users.clear()
        users.update(c["user"] for c in await connections(scale))
        return all(users[s] >= 2 for s in SERVICES)

    await support.eventually(
        listed, timeout=60, interval=1, what="each service's two replicas as its own user"
    )
    assert "guest" not in users, "a service connected as guest"
    figure(
        f"\nscale: {len(queues)} quorum queues of 3 members, leaders {dict(leaders)}; "
        f"connections {dict(users)}"
    )


async def test_drill_1_kill_9_the_node_leading_most_quorum_queues(scale: Scale) -> None:
    async def action() -> None:
        leaders, _ = await asyncio.to_thread(cluster_view, scale)
        name, led = leaders.most_common(1)[0]
        node = scale.cluster.node(name)
        t0 = time.monotonic()
        node.kill()
        took = await failed_over(scale, "1 node kill -9", f"kill -9 {name}", t0)
        await clients_on_live_nodes(scale, node)
        moved = time.monotonic() - t0
        back = await restart_node(scale, node)
        figure(
            f"\nscale drill 1: kill -9 {name} (leader of {led} queues): next booking completed {took:.1f}s "
            f"after the kill, every client on a live node after {moved:.1f}s; restarted, whole again "
            f"in {back:.0f}s"
        )

    await drill(scale, "1 node kill -9", part(1), 45, action)


async def lease_holder(scale: Scale) -> str:
    mongo = scale.mongo()
    try:
        doc = await mongo[f"{scale.prefix}scheduler"]["leases"].find_one({"_id": "timers"})
    finally:
        await mongo.close()
    return (
        str(doc["holder"])
        if doc and doc.get("expires_at", datetime.min.replace(tzinfo=UTC)) > datetime.now(UTC)
        else ""
    )


def replica_of(scale: Scale, holder: str) -> str:
    """The scheduler replica whose REPLICA_ID (host name and port) holds the lease."""
    port = holder.rsplit(":", 1)[-1]
    return next(r for r in REPLICAS["scheduler"] if scale.stack.urls[r].endswith(f":{port}"))


async def test_drill_2_kill_9_one_replica_of_each_service_the_active_scheduler_included(scale: Scale) -> None:
    async def action() -> None:
        for service in SERVICES:
            victim = REPLICAS[service][0]
            if service == "scheduler":
                holder = await support.eventually(
                    lambda: lease_holder(scale), timeout=60, what="a timer lease holder"
                )
                victim = replica_of(scale, holder)
            t0 = time.monotonic()
            scale.stack.stop(victim, kill=True)
            if service == "notifier":
                scale.in_flight[f"{victim} kill -9"] = await drills.notices_in_flight(
                    scale.servers.mongodb_url, scale.prefix
                )
            extra = ""
            if service == "scheduler":
                other = next(r for r in REPLICAS["scheduler"] if r != victim)

                async def taken_over(other: str = other) -> bool:
                    h = await lease_holder(scale)
                    return bool(h) and replica_of(scale, h) == other

                await support.eventually(
                    taken_over, timeout=120, interval=0.5, what=f"{other} taking the timer lease"
                )
                extra = f", timer lease taken over by {other} after {time.monotonic() - t0:.1f}s"
            took = await failed_over(scale, "2 replica kill -9", f"kill -9 {victim}", t0)
            scale.stack.start(victim)
            await scale.stack.wait_ready(victim, timeout=300)
            figure(
                f"\nscale drill 2: kill -9 {victim}: next booking completed {took:.1f}s after{extra}; "
                f"restarted, ready after {time.monotonic() - t0:.0f}s"
            )

    await drill(scale, "2 replica kill -9", part(2), 150, action)


def safe_to_stop(cluster: Cluster, node: Node) -> bool:
    return not cluster.quorum_critical(node)


async def test_drill_3_rolling_restart_of_the_three_nodes(scale: Scale) -> None:
    async def action() -> None:
        for node in scale.cluster.nodes:
            await support.eventually(
                partial(asyncio.to_thread, safe_to_stop, scale.cluster, node),
                timeout=300, interval=1, what=f"{node.name} not quorum-critical",
            )  # fmt: skip
            t0 = time.monotonic()
            await asyncio.to_thread(node.stop)
            stopped = time.monotonic() - t0
            took = await failed_over(scale, "3 rolling restart", f"stop {node.name}", t0)
            back = await restart_node(scale, node)
            figure(
                f"\nscale drill 3: graceful stop of {node.name} took {stopped:.1f}s; next booking completed "
                f"{took:.1f}s after the stop; restarted, whole again in {back:.0f}s"
            )

    await drill(scale, "3 rolling restart", part(3), 100, action)


# ----------------------------------------------------------------- after each drill


async def check_after(scale: Scale, drill_name: str) -> None:
    accepted = scale.accepted()
    refused = Counter((s.http, s.office) for s in scale.sent if s not in accepted)
    assert not refused, f"the stream's bookings are all valid, yet some were refused: {refused}"
    try:
        await support.eventually(
            lambda: asyncio.sleep(0, all(s.settled() for s in accepted)), timeout=600, interval=1,
            what="every booking final (and every demo hold expired)",
        )  # fmt: skip
    except AssertionError:
        stuck = {s.booking_id: s.status for s in accepted if not s.settled()}
        raise AssertionError(f"{len(stuck)} booking(s) not final: {stuck}") from None
    for pair in REPLICAS.values():
        for name in pair:
            await scale.stack.wait_ready(name, timeout=120)
    stack = scale.stack
    async with (
        stack.client("booking", headers={"Authorization": f"Bearer {BOOKING_STAFF_KEY}"}) as staff,
        stack.client("scheduler", headers={"X-Staff-Key": SCHEDULER_STAFF_KEY}) as scheduler,
    ):
        agreed = await agreement.check(staff, scheduler, [KG, DEMO], timeout=300)  # R05
    assert agreed >= len(accepted)
    statuses = Counter(s.status for s in accepted)
    confirmed = [s for s in accepted if s.status == "confirmed"]
    kg_confirmed = [s.booking_id for s in confirmed if s.office == KG]
    mail = await drills.check_mail(
        scale.servers.mailpit_api,
        lambda: drills.deliveries(scale.servers.mongodb_url, scale.prefix),
        scale.in_flight,
        {s.booking_id: s.email for s in accepted if s.office == KG},
        kg_confirmed,
        others=[s.email for s in accepted if s.office == DEMO],
    )
    await nothing_left_in_the_queues(scale)  # audit, last in line, has taken in every event too
    holds = await check_timers_and_audit(scale, accepted, confirmed)
    figure(
        f"\nscale after drill {drill_name}: {len(scale.sent)} submitted, {len(accepted)} accepted, "
        f"final {dict(statuses)}; {mail.mails} mails, duplicates {mail.duplicates}, ambiguous resends "
        f"{mail.ambiguous}; hold timers fired {holds['fired']} (by {holds['by']}), due and unresolved 0; "
        f"audit records {holds['records']}, chains ok; audit deliveries retried {holds['retried']} "
        f"(two writers on one chain: a batch that lost its position too often is tried again)"
    )
    report_failovers(scale, drill_name)


async def check_timers_and_audit(scale: Scale, accepted: list[Sent], confirmed: list[Sent]) -> dict[str, Any]:
    """Every timer due is resolved, each fired hold's event audited once; one audit record per
    event; the chains verify; both audit replicas wrote."""
    mongo = scale.mongo()
    try:
        db = mongo[f"{scale.prefix}scheduler"]
        timers = {
            t["_id"]: t
            for t in await db["timers"].find({}, {"kind": 1, "due_at": 1, "booking_id": 1}).to_list()
        }
        outcomes = {
            o["_id"]: o for o in await db["timer_outcomes"].find({}, {"outcome": 1, "fired_by": 1}).to_list()
        }
    finally:
        await mongo.close()
    due_before = datetime.now(UTC) - timedelta(seconds=30)  # a timer just due may be firing right now
    unresolved = [t for t in timers.values() if t["due_at"] <= due_before and t["_id"] not in outcomes]
    assert not unresolved, f"timers due and never fired or cancelled: {unresolved}"
    fired_holds = {
        t["booking_id"]: outcomes[t["_id"]]
        for t in timers.values()
        if t["kind"] == "hold" and outcomes.get(t["_id"], {}).get("outcome") == "fired"
    }
    expired = {s.booking_id for s in accepted if s.status == "awaiting_coordination"}
    assert expired <= set(fired_holds), (
        f"awaiting coordination without a fired hold: {expired - set(fired_holds)}"
    )
    async with scale.stack.client("audit", headers={"Authorization": f"Bearer {AUDITOR_KEY}"}) as audit:
        records = {
            t: await drills.all_records(audit, t)
            for t in ("booking.requested", "booking.confirmed", "appointment.hold_expired")
        }
        report = (await audit.get("/v1/audit/verify")).json()
    every = [r for rs in records.values() for r in rs]
    twice = {e: n for e, n in Counter(r["event_id"] for r in every).items() if n > 1}
    assert not twice, f"events recorded more than once: {twice}"
    requested = Counter(r["booking_id"] for r in records["booking.requested"])
    assert {s.booking_id: requested[s.booking_id] for s in accepted if requested[s.booking_id] != 1} == {}
    confirmations = Counter(r["booking_id"] for r in records["booking.confirmed"])
    assert all(confirmations[s.booking_id] == 1 for s in confirmed), (
        "booking.confirmed records per confirmed != 1"
    )
    hold_records = Counter(r["booking_id"] for r in records["appointment.hold_expired"])
    assert {b: hold_records[b] for b in fired_holds if hold_records[b] != 1} == {}, (
        "a fired hold audited != once"
    )
    assert report["ok"], report.get("first_problem")
    writers = {name: await delivered(scale, name, "handled") for name in REPLICAS["audit"]}
    assert all(writers.values()), f"both audit replicas write the chains: {writers}"
    retried = {name: await delivered(scale, name, "retried") for name in REPLICAS["audit"]}
    by = Counter(str(o.get("fired_by", "")).rsplit(":", 1)[-1] for o in fired_holds.values())
    return {
        "fired": len(fired_holds),
        "by": dict(by),
        "records": report["records_checked"],
        "retried": retried,
    }


async def delivered(scale: Scale, replica: str, outcome: str) -> float:
    """How many deliveries a replica's consumer has ended so (handled, retried) since it started."""
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as c:  # /metrics is a mount: /metrics/
        text = (await c.get(f"{scale.stack.urls[replica]}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("consult_deliveries_total{") and f'outcome="{outcome}"' in line
    )


async def nothing_left_in_the_queues(scale: Scale) -> None:
    """No message unacknowledged, none waiting in an inbox or a delay queue (a retry on its way),
    none parked (the management API's figures lag by a few seconds: waited for)."""
    left: dict[str, Any] = {}

    async def empty() -> bool:
        left.clear()
        for q in await asyncio.to_thread(scale.cluster.queues):
            if q["name"].startswith("console."):  # the console is not part of the drills' stack
                continue
            if q.get("messages_unacknowledged") or q.get("messages"):  # inboxes, delay queues, parking
                left[q["name"]] = {k: q.get(k) for k in ("messages", "messages_unacknowledged")}
        return not left

    try:
        await support.eventually(
            empty, timeout=120, interval=2, what="every inbox drained and nothing parked"
        )
    except AssertionError:
        raise AssertionError(f"messages left: {left}") from None


def report_failovers(scale: Scale, drill_name: str) -> None:
    events = scale.failovers.get(drill_name, [])
    times = [t for _, t in events]
    after = [
        s
        for s in scale.accepted()
        if s.final_at is not None and any(0 <= s.submitted - k <= 30 for k in scale.kills)
    ]
    calm = [s for s in scale.accepted() if s.final_at is not None and s not in after]

    def lat(group: list[Sent], q: float) -> float:
        return percentile((s.final_at - s.submitted for s in group if s.final_at is not None), q)

    figure(
        f"scale failover times, drill {drill_name}: {', '.join(f'{w} {t:.1f}s' for w, t in events)}; "
        f"p50 {percentile(times, 50):.1f}s p99 {percentile(times, 99):.1f}s; "
        f"booking latency (submit to final) "
        f"within 30 s after a failover p50 {lat(after, 50):.1f}s p99 {lat(after, 99):.1f}s (n={len(after)}), "
        f"otherwise p50 {lat(calm, 50):.1f}s p99 {lat(calm, 99):.1f}s (n={len(calm)})"
    )
    every = [t for evs in scale.failovers.values() for _, t in evs]
    if drill_name.startswith("3"):
        figure(
            f"scale failover times, all drills: p50 {percentile(every, 50):.1f}s "
            f"p99 {percentile(every, 99):.1f}s (n={len(every)})"
        )
