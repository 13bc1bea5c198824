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
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import env
from bench.results import Figure, Run, latency_ms, rate
from bench.stack import AUDITOR_KEY, PORTAL_KEY, SERVICES, Tap, histogram, mongo_time, pids, quantile

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
    """A poll that runs in the background for the whole run, between start() and stop(), noting when
    it first found each key (an address, a booking id); bookings wait on an event, not a poll loop
    each (hundreds of them in flight at the higher loads)."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.found: dict[str, float] = {}
        self._waiting: dict[str, asyncio.Event] = {}
        self._task = asyncio.create_task(self._poll())

    def arrived(self, key: str, at: float) -> None:
        if key not in self.found:
            self.found[key] = at
            if (event := self._waiting.pop(key, None)) is not None:
                event.set()

    async def wait(self, key: str, deadline: float) -> float | None:
        """When `key` was found, or None if not by `deadline` (epoch seconds)."""
        if key not in self.found:
            event = self._waiting.setdefault(key, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), max(deadline - time.time(), 0.0))
            except TimeoutError:
                return None
        return self.found[key]

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

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            while True:
                try:
                    r = await c.get(f"{env.MAILPIT_API}/search", params={"query": self.prefix, "limit": 500})
                    for m in r.json().get("messages", []):
                        for to in m.get("To") or []:
                            addr = to.get("Address", "")
                            if addr.startswith(self.prefix) and addr not in self.found:
                                self.arrived(addr, _epoch(m.get("Created")))
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
        b.mailed = await mailbox.wait(b.email, deadline)
        if b.mailed is None:
            b.outcome = "no email; events seen: " + (",".join(tap.of(b.booking_id)) or "none")
            return
        b.audited = await audit.wait(b.booking_id, deadline)
        if b.audited is None:
            b.outcome = "email but no audit record of it"
            return
        b.outcome = "done"


@dataclass
class AuditWatch(Watcher):
    """One auditor reading audit's `notification.sent` records page by page, as an auditor's tool would.

    One query every half second for the whole run, not one per booking: per-booking polling made the
    bench itself the largest load on the database (each search is a filtered scan on FerretDB).
    A record counts when the watcher first sees it, so latency includes up to one poll interval.
    Each poll reads from `LOOKBACK` before the newest record seen (not from the start of the run,
    which re-read every earlier step's records at every poll): a record that reaches audit more than
    that behind the newest is missed, which happens only far past the knee (p99 > 2 s stops the run).
    """

    portal: Portal
    since: datetime
    newest: datetime | None = None
    polls: int = 0

    LOOKBACK = timedelta(seconds=10)

    async def _poll(self) -> None:
        url = f"{self.portal.audit_url}/v1/audit/records"
        while True:
            start = self.since if self.newest is None else max(self.since, self.newest - self.LOOKBACK)
            params: dict[str, Any] = {
                "type": "notification.sent",
                "office_id": OFFICE,
                "from": start.isoformat(),
                "limit": 500,
            }
            with contextlib.suppress(httpx.HTTPError, ValueError):
                await self._read_all(url, params)
            self.polls += 1
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
                if bid:
                    self.arrived(bid, now)
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    at = datetime.fromisoformat(rec["occurred_at"])
                    self.newest = at if self.newest is None else max(self.newest, at)
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
        held: list[Figure] = []
        last: Figure | None = None
        for load in opts.loads:
            count = max(1, int(load * opts.step_seconds))
            say(f"e2e: {load:g} bookings/s for {opts.step_seconds:g}s ({count} bookings)")
            bookings = [portal.new(index + i) for i in range(count)]
            index += count
            last, why = await step(
                run_, stack, load, bookings, lambda b: portal.follow(b, mailbox, audit, tap)
            )
            if why:
                say(f"e2e: {load:g}/s did not hold: {why}")
                break
            held.append(last)
        record_knee(run_, held, last)
        run_.mongo_time = await mongo_time(stack)
        await record_mark_window(run_, stack)
    finally:
        await mailbox.stop()
        await audit.stop()
        await tap.stop()
        await portal.close()


# --------------------------------------------------------------------------- the knee and its limit

#: a step holds when at least this share of the offered bookings completed (email and audit record)...
HELD_COMPLETED = 0.95
#: ... and the 99th percentile from the request to the audit record stayed within this
HELD_P99_MS = 2000.0
#: the steps when --loads is not given: doubling from 1 until a step does not hold
STEPS = (1, 2, 4, 8, 16, 32, 64, 128)
#: counters read from every service's /metrics before and after each step: what one booking costs
COUNTERS = {
    "db_commands": ("consult_mongo_command_seconds", "_count"),
    "broker_publishes": ("consult_published", "_total"),
    "deliveries": ("consult_deliveries", "_total"),
}
#: the raw rate of the resource each counter uses, from the baseline of the same run
RAW = {
    "db_commands": "baseline/mongo_insert_one",
    "broker_publishes": "baseline/amqp_publish_pipelined",
    "deliveries": "baseline/amqp_consume",
}


async def step(
    run_: Run, stack: Any, load: float, bookings: list[Booking], follow: Callable[[Booking], Any]
) -> tuple[Figure, str | None]:
    """Offer the bookings at `load` per second (open loop), follow each to its audit record, and
    record the step with what it cost: CPU per process, the services' counters."""
    before = await usage(stack)
    meter = env.CpuMeter(pids(stack)).start()
    started = time.time()
    tasks = []
    for i, b in enumerate(bookings):
        delay = started + i / load - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(follow(b)))
    await asyncio.gather(*tasks)
    wall = time.time() - started
    cpu = meter.stop()
    spent = usage_between(before, await usage(stack))
    return record_step(run_, load, bookings, cpu=cpu, wall=wall, spent=spent)


async def usage(stack: Any) -> dict[str, dict[str, float]]:
    """Each counter of COUNTERS, per service, summed over its labels."""
    out: dict[str, dict[str, float]] = {k: {} for k in COUNTERS}
    async with httpx.AsyncClient(timeout=10) as c:
        for service in SERVICES:
            text = (await c.get(f"{stack.urls[service]}/metrics/")).text
            for family in text_string_to_metric_families(text):
                for key, (name, suffix) in COUNTERS.items():
                    if family.name != name:
                        continue
                    for sample in family.samples:
                        if sample.name == name + suffix:
                            out[key][service] = out[key].get(service, 0.0) + sample.value
    return out


def usage_between(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {
        key: {svc: after[key].get(svc, 0.0) - before[key].get(svc, 0.0) for svc in after[key]}
        for key in after
    }


def per_booking(spent: dict[str, Any], cpu: dict[str, float], wall: float, done: int) -> dict[str, Any]:
    """What one completed booking cost during a step: commands, publishes and deliveries per service
    (and in all), CPU ms per process (the bench's own CPU is listed apart: it is the load, not the system)."""
    n = max(done, 1)
    out: dict[str, Any] = {}
    for key, by_service in spent.items():
        shares = {svc: round(v / n, 2) for svc, v in sorted(by_service.items())}
        out[key] = {"total": round(sum(by_service.values()) / n, 2), **shares}
    ms = {proc: round(cores * wall * 1000 / n, 1) for proc, cores in cpu.items()}
    out["cpu_ms"] = {"total": round(sum(v for k, v in ms.items() if k != "bench"), 1), **ms}
    return out


def record_step(
    run_: Run,
    load: float,
    bookings: list[Booking],
    *,
    cpu: dict[str, float],
    wall: float,
    spent: dict[str, Any],
) -> tuple[Figure, str | None]:
    """The step's figure, and why it did not hold (None if it held)."""
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
    sent_over = max(b.sent for b in bookings) - first
    lat = latency_ms(to_audit)
    completed = len(done) / len(bookings)
    why = None
    if completed < HELD_COMPLETED:
        why = f"{len(done)} of {len(bookings)} completed ({completed:.0%}; {reasons})"
    elif lat and lat["p99"] > HELD_P99_MS:
        why = f"p99 request → audit record {lat['p99']:.0f} ms > {HELD_P99_MS:.0f} ms"
    figure = run_.add(
        Figure(
            PART,
            f"bookings_at_{load:g}_per_s",
            rate(len(done), last - first),
            "booking/s",
            f"offered {load:g}/s: completed bookings (intake → email → audit record) per second; "
            "latency = request → audit record",
            extra={
                "offered_per_s": load,
                "offered_actual_per_s": round((len(bookings) - 1) / sent_over, 2) if sent_over > 0 else None,
                "n": len(bookings),
                "completed": len(done),
                "completed_over_offered": round(completed, 3),
                "held": why is None,
                "not_held_because": why,
                "failed": len(failed),
                "failures": reasons,
                "latency_ms": lat,
                "to_email_ms": latency_ms(to_mail),
                "intake_http_ms": latency_ms(http),
                "cpu_cores_by_process": cpu,
                "per_booking": per_booking(spent, cpu, wall, len(done)),
            },
        )
    )
    return figure, why


def record_knee(run_: Run, held: list[Figure], last: Figure | None) -> None:
    """The knee (the highest offered load that held), the limit this machine allows (the scarcest
    resource's raw rate in this run ÷ its use per booking at the knee) and knee ÷ limit."""
    measured = held[-1] if held else last
    if measured is None:
        return
    use = measured.extra["per_booking"]
    limits: dict[str, dict[str, Any]] = {}
    cores = os.cpu_count() or 1
    if use["cpu_ms"]["total"] > 0:
        limits["cpu"] = {
            "raw_per_s": cores * 1000.0,
            "raw": f"{cores} cores (CPU ms per second)",
            "per_booking": use["cpu_ms"]["total"],
        }
    for key, raw_key in RAW.items():
        raw = run_.get(raw_key)
        if raw is not None and raw.value and use[key]["total"] > 0:
            limits[key] = {"raw_per_s": raw.value, "raw": raw_key, "per_booking": use[key]["total"]}
    for entry in limits.values():
        entry["limit_per_s"] = round(entry["raw_per_s"] / entry["per_booking"], 1)
    knee = float(held[-1].extra["offered_per_s"]) if held else 0.0
    if limits:
        scarcest = min(limits, key=lambda k: limits[k]["limit_per_s"])
        run_.add(
            Figure(
                PART,
                "limit",
                limits[scarcest]["limit_per_s"],
                "booking/s",
                f"what this machine allows: the scarcest resource ({scarcest}), its raw rate in this run ÷ "
                f"its use per booking at {measured.extra['offered_per_s']:g}/s",
                extra={"scarcest": scarcest, "resources": limits, "measured_at": measured.key},
            )
        )
    run_.add(
        Figure(
            PART,
            "knee",
            knee,
            "booking/s",
            f"the highest offered load that held (≥ {HELD_COMPLETED:.0%} completed, p99 request → audit "
            f"record ≤ {HELD_P99_MS / 1000:g} s); ratio = knee ÷ limit (goal ≥ 0.5)",
            baseline=f"{PART}/limit" if limits else None,
            extra={
                "held": [f.extra["offered_per_s"] for f in held],
                "stopped_because": None if last is None else last.extra["not_held_because"],
            },
        )
    )


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
