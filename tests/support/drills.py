"""What the failure drills share (tests/chaos, tests/scale): private servers, the booking stream's
pieces, the checks made after it, and the figures printed at the end of the run.

The drills never touch the servers other tests share: each starts its own FerretDB and Mailpit
(`PrivateServers`, on free ports, data in a temporary folder) and its own RabbitMQ node(s)
(deploy/rabbit_cluster.py's `Node`).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pymongo import AsyncMongoClient

from deploy.rabbit_cluster import RABBITMQ_SERVER, Node
from services.scheduler import seed
from shared.calendar import OfficeCalendar
from shared.clock import SystemClock
from shared.settings import ServiceSettings
from tests import support

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".local" / "bin"
#: what every accepted booking must end in (nothing left `requested`): confirmed; re-coordination
#: proposed (alternatives held); awaiting coordination (the hold expired: staff take over); rejected
FINAL = frozenset({"confirmed", "recoordination_proposed", "awaiting_coordination", "rejected"})
KG = "kushiro-gyosei"

# ----------------------------------------------------------------- figures


#: the drills' figures by section, printed in the run's terminal summary (tests/conftest.py), so
#: that a passing CI run shows them too
FIGURES: dict[str, list[str]] = {}


def figure(line: str, section: str) -> None:
    """Print a drill's figure (shown with -s or on failure) and keep it for the run's summary."""
    print(line)
    FIGURES.setdefault(section, []).append(line.strip())


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method; nan for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


# ----------------------------------------------------------------- private servers


@dataclass
class Server:
    """A server binary of our own, restartable on the same ports and data."""

    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


@dataclass
class PrivateServers:
    """Our own FerretDB and Mailpit on free ports, data under `tmp` (deploy/local.py builds both)."""

    tmp: Path
    log_dir: Path
    mongo_port: int = field(default_factory=support.free_port)
    smtp_port: int = field(default_factory=support.free_port)
    mail_api_port: int = field(default_factory=support.free_port)
    ferret: Server = field(init=False)
    mailpit: Server = field(init=False)

    def __post_init__(self) -> None:
        self.ferret = Server(
            [str(BIN / "ferretdb-local"), "-listen", f"127.0.0.1:{self.mongo_port}",
             "-data", str(self.tmp / "ferret")],
            self.log_dir / "ferretdb.log",
        )  # fmt: skip
        self.mailpit = Server(
            [
                str(BIN / "mailpit"), "--smtp", f"127.0.0.1:{self.smtp_port}",
                "--listen", f"127.0.0.1:{self.mail_api_port}",
                "--database", str(self.tmp / "m.db"), "--max", "0", "--smtp-auth-accept-any",
                "--smtp-auth-allow-insecure", "--smtp-disable-rdns", "--disable-version-check",
            ],
            self.log_dir / "mailpit.log",
        )  # fmt: skip

    @property
    def mongodb_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/"

    @property
    def smtp_url(self) -> str:
        return f"smtp://127.0.0.1:{self.smtp_port}"

    @property
    def mailpit_api(self) -> str:
        return f"http://127.0.0.1:{self.mail_api_port}/api/v1"

    async def start(self) -> None:
        (self.tmp / "ferret").mkdir(parents=True, exist_ok=True)
        self.ferret.start()
        self.mailpit.start()
        await asyncio.gather(
            wait_port(self.mongo_port), wait_port(self.smtp_port), wait_port(self.mail_api_port)
        )

    def stop(self) -> None:
        self.ferret.kill()
        self.mailpit.kill()


def require_binaries(*more: Path) -> None:
    """The drills' server binaries: deploy/local.py builds FerretDB's and Mailpit's, apt gives RabbitMQ."""
    wanted = (BIN / "ferretdb-local", BIN / "mailpit", Path(RABBITMQ_SERVER), *more)
    if missing := [str(b) for b in wanted if not (b.exists() or shutil.which(str(b)))]:
        pytest.fail(f"the drills need local server binaries: {missing} (run `make infra-up`)")


async def wait_port(port: int, timeout: float = 30.0) -> None:
    async def open_() -> bool:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return True
        except OSError:
            return False

    await support.eventually(open_, timeout=timeout, interval=0.2, what=f"port {port}")


async def node_ready(node: Node, timeout: float = 90.0) -> None:
    """Until our RabbitMQ node accepts AMQP and serves its management API."""
    await support.eventually(
        lambda: asyncio.to_thread(node.answers),
        timeout=timeout,
        interval=0.3,
        what=f"RabbitMQ node {node.name}",
    )


async def vhost(api: str, name: str) -> None:
    """A vhost on a broker of our own, guest allowed everything in it."""
    async with httpx.AsyncClient(timeout=30) as c:
        (await c.put(f"{api}/vhosts/{quote(name, safe='')}")).raise_for_status()
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        url = f"{api}/permissions/{quote(name, safe='')}/guest"
        (await c.put(url, json=perms)).raise_for_status()


# ----------------------------------------------------------------- the stream


def open_days(office: str, n: int, ahead: int = 14, per_day: int = 6) -> list[date]:
    """Open days of an office from `ahead` days on (no timer comes due during a drill), ~`per_day`
    bookings a day for n bookings: all inside the office's booking horizon."""
    cal = OfficeCalendar(ServiceSettings().policies()[office])
    day = SystemClock().now().date() + timedelta(days=ahead)
    days: list[date] = []
    while len(days) < max(n // per_day, 5):
        if cal.is_open(day):
            days.append(day)
        day += timedelta(days=1)
    return days


async def submit(portal: httpx.AsyncClient, office: str, form: dict[str, Any], key: str) -> httpx.Response:
    """As a portal does: the same Idempotency-Key until the service answers (it may be down)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            r = await portal.post(
                f"/v1/offices/{office}/bookings", json=form, headers={"Idempotency-Key": key}
            )
            if r.status_code < 500 and r.json().get("error") != "in-progress":
                return r
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"booking {key} not answered within 120 s")
        await asyncio.sleep(0.5)


# ----------------------------------------------------------------- after the stream


async def all_records(audit: httpx.AsyncClient, type_: str) -> list[dict[str, Any]]:
    """Every audit record of one type, page by page."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"type": type_, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        r = await audit.get("/v1/audit/records", params=params)
        r.raise_for_status()
        out += r.json()
        cursor = r.headers.get("X-Next-Cursor")
        if not cursor:
            return out


async def deliveries(mongodb_url: str, db_prefix: str) -> list[dict[str, Any]]:
    """The notifier's delivery records."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    try:
        coll = mongo[f"{db_prefix}notifier"]["deliveries"]
        fields = {"state": 1, "booking_id": 1, "message_id": 1, "ambiguous_resends": 1, "attempts": 1}
        return await coll.find({}, fields).to_list()
    finally:
        await mongo.close()


async def notices_in_flight(mongodb_url: str, db_prefix: str) -> set[str]:
    """Right after a kill of a notifier (or SMTP): the notices that may have been between the
    server's 250 and the durable mark, the only ones that may be sent twice (ambiguous resends)."""
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_url, tz_aware=True)
    try:
        db = mongo[f"{db_prefix}notifier"]
        accepted = {d["_id"] async for d in db["deliveries_accepted"].find({}, {"_id": 1})}
        claimed = db["deliveries"].find({"state": "claimed"}, {"booking_id": 1})
        return {d["booking_id"] async for d in claimed if d["_id"] not in accepted}
    finally:
        await mongo.close()


@dataclass
class MailCheck:
    """What check_mail found: mails received, duplicates, ambiguous resends counted."""

    mails: int
    duplicates: int
    ambiguous: int


async def check_mail(
    mailpit_api: str,
    records: Callable[[], Awaitable[list[dict[str, Any]]]],
    in_flight: Mapping[str, set[str]],
    email_of: Mapping[str, str],
    confirmed: Iterable[str],
    *,
    others: Iterable[str] = (),
) -> MailCheck:
    """Every confirmed booking mailed; a second copy only as a counted ambiguous resend.

    Email is exactly-once only as far as SMTP allows: a notice may go twice only when an attempt was
    killed between the server's 250 and the durable mark. Such a resend is counted on its record,
    carries the first attempt's Message-ID, and is one of the notices `in_flight` at a kill.
    `email_of`: booking -> address, for the bookings whose mails are counted; `others`: addresses of
    bookings that may get several mails (not counted), besides the counsellors' own (R16)."""
    confirmed = list(confirmed)
    message_ids: dict[str, set[str]] = {}

    async def mails() -> Counter[str]:
        async with httpx.AsyncClient(timeout=30) as c:
            r = await c.get(f"{mailpit_api}/messages", params={"limit": 100000})
            r.raise_for_status()
        message_ids.clear()
        for m in r.json()["messages"]:
            for to in m["To"]:
                message_ids.setdefault(to["Address"], set()).add(m["MessageID"])
        return Counter(to["Address"] for m in r.json()["messages"] for to in m["To"])

    async def all_mailed() -> Counter[str] | None:
        got = await mails()
        return got if all(got[email_of[b]] >= 1 for b in confirmed) else None

    await support.eventually(all_mailed, timeout=180, interval=2, what="a mail for every confirmed booking")

    async def settled_records() -> list[dict[str, Any]]:
        found = await records()
        return found if all(d["state"] != "claimed" for d in found) else []

    # no notice is still claimed, so no resend is still on its way
    found = await support.eventually(
        settled_records, timeout=180, interval=1, what="every delivery record sent or failed"
    )
    got = await mails()
    ambiguous: Counter[str] = Counter()
    for d in found:
        ambiguous[d["booking_id"]] += int(d.get("ambiguous_resends", 0))
    flying: set[str] = set().union(*in_flight.values())
    by_email = {e: b for b, e in email_of.items()}
    duplicates = {by_email[e]: n for e, n in got.items() if n > 1 and e in by_email}
    counsellors = {str(c.email) for c in seed.read(ROOT / "deploy" / "counsellors.yaml") if c.email}
    strays = set(got) - set(by_email) - counsellors - set(others)
    assert not strays, f"mail to addresses of no booking and no counsellor: {strays}"
    unexplained = {
        b: {"mails": n, "ambiguous_resends": ambiguous[b], "in_flight": b in flying,
            "message_ids": sorted(message_ids[email_of[b]])}
        for b, n in duplicates.items()
        if n - 1 > ambiguous[b] or b not in flying or len(message_ids[email_of[b]]) != 1
    }  # fmt: skip
    assert not unexplained, f"emails sent twice that are no counted ambiguous resend: {unexplained}"
    assert len(duplicates) <= len(flying), "more duplicates than deliveries in flight at the kills"
    return MailCheck(sum(got.values()), len(duplicates), sum(ambiguous.values()))


async def queue_info(api: str, vhost_name: str, queue: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{api}/queues/{quote(vhost_name, safe='')}/{quote(queue, safe='')}")
        r.raise_for_status()
        return dict(r.json())


async def parked(api: str, vhost_name: str, queue: str) -> list[dict[str, Any]]:
    """The parked messages, left in place (ack_requeue_true)."""
    body = {"count": 1000, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 1_000_000}
    async with httpx.AsyncClient(timeout=30) as c:
        r = await c.post(f"{api}/queues/{quote(vhost_name, safe='')}/{quote(queue, safe='')}/get", json=body)
        r.raise_for_status()
        return list(r.json())
