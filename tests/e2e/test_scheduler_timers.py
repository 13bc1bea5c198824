"""Durable timers with real scheduler processes: SIGKILL and restart, and two replicas at once.

Each test runs its own scheduler process(es) in its own vhost and databases, with a test office
(written to a temporary directory) whose alternatives are held for ten minutes. The processes' clock
is the system clock moved by the test (CLOCK_OFFSET_FILE, tests.support.ProcessClock), so the
hold-expiry timers (R05) come due exactly when the test moves the clock past them: while the
scheduler is down, or after the leader of two replicas died, never because the machine was slow.
Events are observed on a probe queue bound to the events exchange: each pending timer must fire
exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.clock import SystemClock
from tests import support
from tests.support import free_port
from tests.support.scheduler import DEMO, DEMO_OFFICES, STAFF, Booking, Probe, jst, probe

ROOT = Path(__file__).resolve().parents[2]
OFFICE = "e2e-timers"
HOLD_SECONDS = 600  # nothing comes due by itself during a test: the test moves the clock
#: far ahead, so the wall clock never reaches the appointments: the wished day has no counsellor,
#: the day after has one, so every request gets exactly one held alternative and one hold timer
WISHED = (jst(2027, 3, 1, 9, 0), jst(2027, 3, 1, 17, 0))
pytestmark = pytest.mark.slow


@pytest.fixture
def offices(tmp_path: Path) -> Path:
    """A test office: 30-minute grid 09:00-17:00 every day, alternatives held for a few seconds."""
    policy = yaml.safe_load((DEMO_OFFICES / "demo-town.yaml").read_text(encoding="utf-8"))
    policy |= {
        "office_id": OFFICE,
        "hours": {"opens": "09:00", "closes": "17:00", "slot_minutes": 30},
        "hold_alternatives_for": f"PT{HOLD_SECONDS}S",
    }
    (tmp_path / f"{OFFICE}.yaml").write_text(yaml.safe_dump(policy, allow_unicode=True), encoding="utf-8")
    return tmp_path


@dataclass
class Replica:
    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = self.env | {"HTTP_PORT": str(self.port), "REPLICA_ID": self.name}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.scheduler"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, the lease is not released, APScheduler's jobs are lost."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def ready(self, timeout: float = 60.0) -> float:
        started = time.monotonic()

        async def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text(errors='replace')[-3000:]}")
            try:
                async with httpx.AsyncClient(timeout=2) as c:
                    return (await c.get(f"{self.url}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await support.eventually(up, timeout=timeout, interval=0.1, what=f"{self.name} ready")
        return time.monotonic() - started

    async def quiet(self, seen: Probe, office: str, now: datetime) -> None:
        """Negative checks: no timer of the office is pending that is due by `now`, this replica's
        outbox relays have then published everything, and the probe has seen all of it."""

        async def nothing_due() -> bool:
            pending = await self.get("/v1/staff/timers", office_id=office, status="pending")
            return all(datetime.fromisoformat(t["due_at"]) > now for t in pending)

        await support.eventually(nothing_due, timeout=60, what=f"{self.name}: no {office} timer due")
        await support.process_quiet(self.url)
        await seen.flush()

    async def get(self, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10, headers=STAFF) as c:
            r = await c.get(path, params=params)
            r.raise_for_status()
            return r.json()


@pytest.fixture
def clock(tmp_path: Path) -> support.ProcessClock:
    return support.ProcessClock(tmp_path / "clock-offset")


@pytest.fixture
async def replicas(
    amqp_url: str, db_prefix: str, offices: Path, clock: support.ProcessClock
) -> AsyncIterator[Callable[..., Replica]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env |= {
        "ENVIRONMENT": "test",
        "CLOCK_OFFSET_FILE": str(clock.path),
        "AMQP_URL": amqp_url,
        "MONGODB_URL": support.MONGODB_URL,
        "DB_PREFIX": db_prefix,
        "EXTRA_OFFICES_DIR": str(offices),
        "OUTBOX_POLL_SECONDS": "0.2",
        "TIMER_POLL_SECONDS": "0.2",
        "LEASE_SECONDS": "3",
        "STAFF_API_KEY": STAFF["X-Staff-Key"],
        # R16: the test office's Teams meetings come from the Graph contract server (demo-town's app)
        "GRAPH_CREDENTIALS": json.dumps({OFFICE: "dev-graph-secret", "demo-town": "dev-graph-secret"}),
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    made: list[Replica] = []

    def make(name: str, **more_env: str) -> Replica:
        replica = Replica(name, env | more_env, ROOT / ".local" / "logs" / f"{db_prefix}{name}.log")
        replica.log.parent.mkdir(parents=True, exist_ok=True)
        made.append(replica)
        return replica

    yield make
    for r in made:
        r.stop()


async def _seed(replica: Replica, names: list[str], days: tuple[str, ...] = ("2027-03-02",)) -> None:
    """Counsellors free only on the given days (no weekly hours)."""
    exceptions = [{"date": d, "spans": ["09:00-17:00"]} for d in days]
    async with httpx.AsyncClient(base_url=replica.url, timeout=10, headers=STAFF) as c:
        for name in names:
            mail = f"{name}@e2e-timers.example.org"  # R16: the organiser of their Teams meetings
            body = {
                "name": name,
                "areas": ["釧路"],
                "exceptions": exceptions,
                "email": mail,
                "organizer": mail,
            }
            r = await c.put(f"/v1/staff/offices/{OFFICE}/counsellors/{name}", json=body)
            assert r.status_code in (200, 201), r.text


async def _request(booking: Booking, seen: Probe, n: int) -> list[str]:
    events = [booking.requested(OFFICE, [WISHED], area="釧路") for _ in range(n)]
    await booking.send(*events)
    for e in events:
        await seen.wait("appointment.recoordination_proposed", e.payload.booking_id, timeout=30)
    return [e.payload.booking_id for e in events]


def _once_each(seen: Probe, ids: list[str]) -> Counter[str]:
    return Counter(
        e.payload.booking_id for e in seen.of("appointment.hold_expired") if e.payload.booking_id in ids
    )


async def test_timers_survive_sigkill_and_fire_exactly_once_after_restart(
    replicas: Callable[..., Replica], amqp_url: str, clock: support.ProcessClock
) -> None:
    scheduler = replicas("sched-a")
    scheduler.start()
    await scheduler.ready()
    await _seed(scheduler, [f"c{k}" for k in range(20)])
    async with probe(amqp_url) as seen:
        booking = Booking(amqp_url, SystemClock())
        early = await _request(booking, seen, 10)
        clock.move(HOLD_SECONDS / 2)  # the late holds end half a hold after the early ones
        late = await _request(booking, seen, 10)
        pending = await scheduler.get("/v1/staff/timers", office_id=OFFICE)
        assert len(pending) == 20 and {t["kind"] for t in pending} == {"hold"}
        due = {t["booking_id"]: datetime.fromisoformat(t["due_at"]) for t in pending}

        scheduler.kill()
        killed_at = time.monotonic()
        clock.set(max(due[b] for b in early) + timedelta(seconds=2))  # the early holds end while down
        assert max(due[b] for b in early) < clock.now() < min(due[b] for b in late)
        assert seen.of("appointment.hold_expired") == []  # nobody fired them while it was down

        scheduler.start()
        restart = await scheduler.ready()
        await support.eventually(lambda: _all_fired(seen, early), timeout=30, what="10 late hold expiries")
        assert _once_each(seen, late) == Counter()  # not due yet
        clock.set(min(due[b] for b in late) - timedelta(seconds=1))  # the late ones come due in ~1 s
        await support.eventually(lambda: _all_fired(seen, late), timeout=60, what="10 on-time hold expiries")
        await scheduler.quiet(seen, OFFICE, clock.now())  # anything doubled would show up now
        fired = await scheduler.get("/v1/staff/timers", office_id=OFFICE, status="fired")
        lease = await scheduler.get("/v1/staff/timers/lease")

    assert _once_each(seen, early + late) == Counter({b: 1 for b in early + late})
    lateness = {e.payload.booking_id: e.payload.lateness_seconds for e in seen.of("appointment.hold_expired")}
    assert all(lateness[b] >= 2.0 for b in early)  # due while down: fired late at start-up, lateness recorded
    assert len(fired) == 20 and all(t["fired_by"] == "sched-a" for t in fired)
    assert lease["stats"]["last_takeover"]["late_fired"] >= 10
    print(
        f"\nkilled {time.monotonic() - killed_at:.1f}s ago; restart to ready {restart:.2f}s; "
        f"take-over {lease['stats']['last_takeover']}; "
        f"late by {min(lateness[b] for b in early):.2f}-{max(lateness[b] for b in early):.2f}s; "
        f"on-time lateness max {max(lateness[b] for b in late):.3f}s; repeated deliveries {seen.repeats}"
    )


async def _all_fired(seen: Probe, ids: list[str]) -> bool:
    return set(_once_each(seen, ids)) == set(ids)


async def test_two_replicas_never_double_book_and_fire_each_timer_once(
    replicas: Callable[..., Replica], amqp_url: str, clock: support.ProcessClock
) -> None:
    first, second = replicas("sched-1"), replicas("sched-2")
    first.start()
    await first.ready()
    second.start()
    await second.ready()
    await _seed(first, ["c1", "c2", "c3"], ("2027-03-02", "2027-03-03"))  # alternatives on the 3rd
    async with probe(amqp_url) as seen:
        booking = Booking(amqp_url, SystemClock())
        one_slot = (jst(2027, 3, 2, 9, 0), jst(2027, 3, 2, 9, 30))
        events = [booking.requested(OFFICE, [one_slot], area="釧路") for _ in range(30)]
        await booking.send(*events)

        async def all_answered() -> bool:
            answered = {e.payload.booking_id for e in seen.events if e.type.startswith("appointment.")}
            return answered >= {e.payload.booking_id for e in events}

        await support.eventually(all_answered, timeout=60, what="30 requests answered")
        confirmed = seen.of("appointment.confirmed")
        proposed = [e.payload.booking_id for e in seen.of("appointment.recoordination_proposed")]
        assert len(confirmed) == 3 and len(proposed) == 27
        assert sorted(e.payload.appointment.counsellor_id for e in confirmed) == ["c1", "c2", "c3"]
        holders = [(await r.get("/v1/staff/timers/lease"))["leader"] for r in (first, second)]
        assert holders.count(True) == 1
        leader, other = (first, second) if holders[0] else (second, first)
        assert _once_each(seen, proposed) == Counter()  # held for ten minutes of the replicas' clock
        leader.kill()
        clock.move(HOLD_SECONDS + 1)  # the other replica takes the expired lease and fires the holds
        await support.eventually(lambda: _all_fired(seen, proposed), timeout=40, what="27 hold expiries")
        await other.quiet(seen, OFFICE, clock.now())
        took_over = await other.get("/v1/staff/timers/lease")
        fired = await other.get("/v1/staff/timers", office_id=OFFICE, status="fired")

    assert _once_each(seen, proposed) == Counter({b: 1 for b in proposed})
    assert took_over["leader"] and took_over["lease"]["holder"] == other.name
    assert {t["fired_by"] for t in fired} == {other.name}
    counts = Counter(e.producer for e in seen.events)
    print(
        f"\ntwo replicas: 3 confirmed, 27 held; take-over {took_over['stats']['last_takeover']}; "
        f"{counts}; repeated deliveries {seen.repeats}"
    )


async def test_demo_office_confirms_notices_recoordinates_and_fires_the_no_show_in_seconds(
    replicas: Callable[..., Replica], amqp_url: str, clock: support.ProcessClock
) -> None:
    """The demo office (deploy/offices-demo) and the seed counsellors file: what `make demo` shows.
    R05, R06 (notice 10 s before the start), R08 (no-show 5 s after it). The consultation starts ten
    minutes ahead; the test moves the scheduler's clock to just before each timer."""
    scheduler = replicas(
        "sched-demo",
        EXTRA_OFFICES_DIR=str(DEMO_OFFICES),
        COUNSELLORS_FILE=str(ROOT / "deploy" / "counsellors.yaml"),
    )
    scheduler.start()
    await scheduler.ready()
    start = (clock.now() + timedelta(minutes=10)).replace(second=0, microsecond=0)
    window = (start, start + timedelta(minutes=5))
    async with probe(amqp_url) as seen:
        booking = Booking(amqp_url, SystemClock())
        absent = booking.requested(DEMO, [window], minutes=5, area="釧路")
        present = booking.requested(DEMO, [window], minutes=5, area="十勝")
        await booking.send(absent, present)
        (a,) = await seen.wait("appointment.confirmed", absent.payload.booking_id, timeout=20)
        (p,) = await seen.wait("appointment.confirmed", present.payload.booking_id, timeout=20)
        assert (a.payload.appointment.counsellor_id, a.payload.appointment.start) == ("demo-aoki", start)
        assert (p.payload.appointment.counsellor_id, p.payload.appointment.app) == (
            "demo-ito",
            "teleoffice",  # R16: a pre-issued room of demo-ito's
        )
        assert a.payload.appointment.meeting_url.startswith(f"{support.GRAPH_URL}/meet/")  # Graph's

        again = booking.requested(DEMO, [window], minutes=5, area="釧路")  # demo-aoki is taken then: R05
        await booking.send(again)
        (proposal,) = await seen.wait(
            "appointment.recoordination_proposed", again.payload.booking_id, timeout=20
        )
        options = proposal.payload.alternatives
        assert len(options) == 3 and all(o.counsellor_id == "demo-aoki" for o in options)
        assert [(o.start - start).days for o in options] == [1, 2, 3]  # the same time on the next days
        await booking.send(booking.accepted(DEMO, again.payload.booking_id, options[0].option_id))
        (moved,) = await seen.wait("appointment.confirmed", again.payload.booking_id, timeout=20)
        assert moved.payload.appointment.start == options[0].start and moved.payload.appointment.version == 2

        await booking.send(booking.attended(DEMO, present.payload.booking_id))
        await _no_show_disarmed(scheduler, present.payload.booking_id)
        assert seen.of("appointment.notice_due") == []  # ten minutes ahead: nothing due yet
        clock.set(start - timedelta(seconds=11))  # the notice (10 s before the start) comes due in ~1 s
        (notice,) = await seen.wait("appointment.notice_due", absent.payload.booking_id, timeout=90)
        clock.set(start + timedelta(seconds=4))  # the no-show (5 s after the start) in ~1 s
        (no_show,) = await seen.wait("appointment.no_show", absent.payload.booking_id, timeout=90)
        await scheduler.quiet(seen, DEMO, clock.now())
        assert seen.of("appointment.no_show", present.payload.booking_id) == []  # attended: disarmed
    assert notice.payload.due_at == start - timedelta(seconds=10)
    assert no_show.payload.due_at == start + timedelta(seconds=5) and no_show.payload.grace_seconds == 5.0
    assert no_show.payload.lateness_seconds >= 0
    late = (no_show.payload.lateness_seconds, notice.payload.lateness_seconds)
    print(f"\ndemo office: no-show {late[0]:.3f}s late; notice {late[1]:.3f}s late")


async def _no_show_disarmed(scheduler: Replica, booking_id: str) -> None:
    """The scheduler has handled booking.attended: the booking's no-show timer is no longer pending."""

    async def disarmed() -> bool:
        pending = await scheduler.get("/v1/staff/timers", booking_id=booking_id, status="pending")
        return not any(t["kind"] == "no_show" for t in pending)

    await support.eventually(disarmed, timeout=30, what=f"the no-show of {booking_id} disarmed")
