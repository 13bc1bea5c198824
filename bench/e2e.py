"""Part 2, end to end: a portal's HTTP booking request → confirmation email in Mailpit → audit record.

Office kushiro-gyosei (KG sends a confirmation email, R06). Each booking asks for one open day
(09:00–17:00 JST), days and areas rotated so counsellors have room. Bookings arrive at a fixed rate
per step (open loop: a slow system does not slow the arrivals). A booking is complete when its
email is in Mailpit (Mailpit's own receive time is used) and audit holds its `notification.sent`
record (polled every 100 ms after the email arrived). Per step: throughput of completed bookings
and p50/p95/p99 of the intake HTTP call, of request→email and of request→audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench import env
from bench.results import Figure, Run, latency_ms, rate
from bench.stack import AUDITOR_KEY, PORTAL_KEY, Tap, histogram, mongo_time, pids, quantile

PART = "e2e"
OFFICE = "kushiro-gyosei"
JST = ZoneInfo("Asia/Tokyo")
ADDRESSES = ("北海道釧路市幸町10-3", "北海道根室市常盤町2-27", "北海道帯広市西5条南8丁目")
TIMEOUT = 60.0


@dataclass
class Booking:
    index: int
    email: str
    sent: float = 0.0  # epoch seconds
    http_seconds: float = 0.0
    status: int = 0
    booking_id: str | None = None
    answer: Any = None
    mailed: float | None = None
    audited: float | None = None
    outcome: str = "pending"


class Watcher:
    """A poll that runs in the background for the whole run, between start() and stop()."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        raise NotImplementedError


@dataclass
class Mailbox(Watcher):
    """Polls Mailpit's newest messages and notes when each bench address received its email."""

    prefix: str
    received: dict[str, float] = field(default_factory=dict)

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            while True:
                try:
                    r = await c.get(f"{env.MAILPIT_API}/search", params={"query": self.prefix, "limit": 500})
                    for m in r.json().get("messages", []):
                        for to in m.get("To") or []:
                            addr = to.get("Address", "")
                            if addr.startswith(self.prefix) and addr not in self.received:
                                self.received[addr] = _epoch(m.get("Created"))
                except (httpx.HTTPError, ValueError):
                    pass
                await asyncio.sleep(0.2)


def _epoch(created: str | None) -> float:
    if not created:
        return time.time()
    return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()


class Portal:
    def __init__(self, stack: Any, run_id: str) -> None:
        self.booking_url = stack.urls["booking"]
        self.audit_url = stack.urls["audit"]
        self.prefix = f"bench-{run_id}-"
        self.days: list[date] = []
        self.form_extra: dict[str, Any] = {}
        self.http = httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {PORTAL_KEY}"})
        self.auditor = httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {AUDITOR_KEY}"})

    async def close(self) -> None:
        await self.http.aclose()
        await self.auditor.aclose()

    async def prepare(self) -> None:
        """What a portal reads first: the office's form (checklist, terms) and its bookable days."""
        r = await self.http.get(f"{self.booking_url}/v1/offices/{OFFICE}")
        r.raise_for_status()
        office = r.json()
        self.form_extra = {
            "duration_minutes": 30,
            "companions": [],
            "device_checklist": [c["id"] for c in office.get("device_checklist", [])],
            "terms_version": (office.get("terms") or {}).get("version"),
        }
        today = datetime.now(JST).date()
        r = await self.http.get(
            f"{self.booking_url}/v1/offices/{OFFICE}/calendar",
            params={"from": str(today + timedelta(days=2)), "to": str(today + timedelta(days=200))},
        )
        r.raise_for_status()
        self.days = [date.fromisoformat(d["date"]) for d in r.json()["days"] if d.get("bookable")]
        if not self.days:
            raise RuntimeError("the calendar shows no bookable day")

    def form(self, b: Booking) -> dict[str, Any]:
        day = self.days[b.index % len(self.days)]
        start = datetime.combine(day, datetime.min.time(), JST).replace(hour=9)
        return {
            "name": "山田 太郎",
            "address": ADDRESSES[b.index % len(ADDRESSES)],
            "phone": "0154-22-1234",
            "email": b.email,
            "windows": [
                {
                    "start": start.astimezone(UTC).isoformat(),
                    "end": (start + timedelta(hours=8)).astimezone(UTC).isoformat(),
                }
            ],
            **self.form_extra,
        }

    def new(self, index: int) -> Booking:
        return Booking(index=index, email=f"{self.prefix}{index}@example.org")

    async def submit(self, b: Booking) -> None:
        b.sent = time.time()
        started = time.perf_counter()
        try:
            r = await self.http.post(
                f"{self.booking_url}/v1/offices/{OFFICE}/bookings",
                json=self.form(b),
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
        except httpx.HTTPError as exc:
            b.outcome = f"http error: {exc}"
            return
        b.http_seconds = time.perf_counter() - started
        b.status = r.status_code
        try:
            b.answer = r.json()
        except ValueError:
            b.answer = r.text[:300]
        if r.status_code == 202 and isinstance(b.answer, dict):
            b.booking_id = b.answer.get("booking_id")
        else:
            b.outcome = f"intake answered {r.status_code}"

    async def follow(self, b: Booking, mailbox: Mailbox, audit: AuditWatch, tap: Tap) -> None:
        """Wait for the email, then for the audit record; give up after TIMEOUT."""
        await self.submit(b)
        if b.booking_id is None:
            return
        deadline = b.sent + TIMEOUT
        while b.email not in mailbox.received:
            if time.time() > deadline:
                b.outcome = "no email; events seen: " + (",".join(tap.of(b.booking_id)) or "none")
                return
            await asyncio.sleep(0.1)
        b.mailed = mailbox.received[b.email]
        while b.booking_id not in audit.recorded:
            if time.time() > deadline:
                b.outcome = "email but no audit record of it"
                return
            await asyncio.sleep(0.1)
        b.audited = audit.recorded[b.booking_id]
        b.outcome = "done"


@dataclass
class AuditWatch(Watcher):
    """One auditor reading audit's `notification.sent` records page by page, as an auditor's tool would.

    One query every half second for the whole run, not one per booking: per-booking polling made the
    bench itself the largest load on the database (each search is a filtered scan on FerretDB).
    A record counts when the watcher first sees it, so latency includes up to one poll interval.
    """

    portal: Portal
    since: datetime
    recorded: dict[str, float] = field(default_factory=dict)

    async def _poll(self) -> None:
        url = f"{self.portal.audit_url}/v1/audit/records"
        params: dict[str, Any] = {
            "type": "notification.sent",
            "office_id": OFFICE,
            "from": self.since.isoformat(),
            "limit": 500,
        }
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                await self._read_all(url, dict(params))
            await asyncio.sleep(0.5)

    async def _read_all(self, url: str, params: dict[str, Any]) -> None:
        """Every page of the search, following X-Next-Cursor."""
        while True:
            r = await self.portal.auditor.get(url, params=params)
            if r.status_code != 200:
                return
            now = time.time()
            for rec in r.json():
                bid = rec.get("booking_id") or (rec.get("payload") or {}).get("booking_id")
                if bid and bid not in self.recorded:
                    self.recorded[bid] = now
            cursor = r.headers.get("X-Next-Cursor")
            if not cursor:
                return
            params["cursor"] = cursor


async def run(run_: Run, stack: Any, box: env.Sandbox, opts: Any, say: Callable[[str], None]) -> None:
    portal = Portal(stack, box.run_id)
    tap = Tap(box.amqp_url)
    mailbox = Mailbox(portal.prefix)
    audit = AuditWatch(portal, since=datetime.now(UTC) - timedelta(minutes=1))
    await tap.start()
    mailbox.start()
    audit.start()
    try:
        try:
            await portal.prepare()
        except Exception as exc:
            run_.skip(PART, f"booking's office API not usable: {type(exc).__name__}: {exc}")
            return
        probe = portal.new(0)
        say("e2e: one probe booking through the whole path")
        await portal.follow(probe, mailbox, audit, tap)
        if probe.outcome != "done":
            detail = probe.outcome if probe.booking_id else f"{probe.outcome}: {str(probe.answer)[:300]}"
            run_.skip(PART, f"the probe booking did not complete: {detail}")
            return
        index = 1
        for load in opts.loads:
            count = max(1, int(load * opts.step_seconds))
            say(f"e2e: {load:g} bookings/s for {opts.step_seconds:g}s ({count} bookings)")
            bookings = [portal.new(index + i) for i in range(count)]
            index += count
            meter = env.CpuMeter(pids(stack)).start()
            started = time.time()
            tasks = []
            for i, b in enumerate(bookings):
                delay = started + i / load - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(portal.follow(b, mailbox, audit, tap)))
            await asyncio.gather(*tasks)
            saturated = record_step(run_, load, bookings, meter.stop())
            if saturated:
                say(f"e2e: stopping at {load:g}/s: {saturated}")
                break
        run_.mongo_time = await mongo_time(stack)
        await record_mark_window(run_, stack)
    finally:
        await mailbox.stop()
        await audit.stop()
        await tap.stop()
        await portal.close()


async def record_mark_window(run_: Run, stack: Any) -> None:
    """The notifier's exactly-once window: from the SMTP server's 250 to the durable record of it
    (`consult_notifier_accept_to_mark_seconds`), over every email of the e2e part. A crash inside
    it is the one way an email can go twice (an ambiguous resend)."""
    buckets, count = await histogram(stack.urls["notifier"], "consult_notifier_accept_to_mark_seconds")
    p50, p95, p99 = (quantile(buckets, q) for q in (0.5, 0.95, 0.99))
    if p50 is None or p95 is None or p99 is None:
        run_.skip(PART, "no email was accepted: the accept-to-mark window was not measured")
        return
    insert = run_.get("baseline/mongo_insert_one")
    raw_ms = insert.extra.get("ms_per_op") if insert else None
    run_.add(
        Figure(
            PART,
            "email_accept_to_mark_p50",
            round(p50 * 1000, 2),
            "ms",
            "SMTP 250 → durable record of it (one insert by _id), p50 over the e2e emails; "
            "a crash inside this window is the only way an email can be sent twice",
            extra={
                "latency_ms": {
                    "p50": round(p50 * 1000, 2),
                    "p95": round(p95 * 1000, 2),
                    "p99": round(p99 * 1000, 2),
                },
                "emails": int(count),
                "raw_insert_one_ms": raw_ms,
                "p50_over_raw_insert_one": round(p50 * 1000 / raw_ms, 2) if raw_ms else None,
            },
        )
    )


def record_step(run_: Run, load: float, bookings: list[Booking], cpu: dict[str, float]) -> str | None:
    done = [b for b in bookings if b.outcome == "done" and b.mailed and b.audited]
    failed = [b for b in bookings if b.outcome != "done"]
    reasons: dict[str, int] = {}
    for b in failed:
        reasons[b.outcome[:120]] = reasons.get(b.outcome[:120], 0) + 1
    first = min(b.sent for b in bookings)
    last = max((b.audited or 0.0) for b in done) if done else first
    to_mail = [b.mailed - b.sent for b in done if b.mailed]
    to_audit = [b.audited - b.sent for b in done if b.audited]
    http = [b.http_seconds for b in bookings if b.status]
    name = f"bookings_at_{load:g}_per_s"
    run_.add(
        Figure(
            PART,
            name,
            rate(len(done), last - first),
            "booking/s",
            f"offered {load:g}/s: completed bookings (intake → email → audit record) per second; "
            "latency = request → audit record",
            extra={
                "offered_per_s": load,
                "n": len(bookings),
                "completed": len(done),
                "failed": len(failed),
                "failures": reasons,
                "latency_ms": latency_ms(to_audit),
                "to_email_ms": latency_ms(to_mail),
                "intake_http_ms": latency_ms(http),
                "cpu_cores_by_process": cpu,
            },
        )
    )
    if len(failed) > len(bookings) * 0.1:
        return f"{len(failed)} of {len(bookings)} did not complete ({reasons})"
    lat = latency_ms(to_audit)
    if lat and lat["p95"] > 20_000:
        return f"p95 latency {lat['p95']:.0f} ms"
    return None
