"""`make demo`: a narrated walk through the running system, as a portal, an office and an auditor see it.

It talks to the four services over HTTP and AMQP exactly as the outside world does, reads the emails
that really reached the SMTP server (Mailpit) and the records the audit service stored. Scenes:
a KG booking and its confirmation email; an HW job seeker registered over AMQP and booked; requests
refused with their rule; on the demo office (short clocks) a notice and a no-show firing, and a
re-coordination accepted; finally the audit trail and its hash chain.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import ssl
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as daytime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import httpx
import icalendar
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from examples import forms
from shared import topology
from shared.calendar import OfficeCalendar
from shared.clock import JST, SystemClock, format_jst
from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
#: an address in each area of the demo office that a counsellor serves (deploy/counsellors.yaml)
DEMO_ADDRESSES = {"釧路": "北海道釧路市黒金町7-5", "根室": "北海道根室市常盤町2-1"}
PORTS = {"booking": 8001, "scheduler": 8002, "notifier": 8003, "audit": 8004, "console": 8005}
#: what `make up` keeps for the console's development sign-in (services/console/ops.py)
CONSOLE_PASSWORD = ROOT / ".local" / "console-dev-password.txt"
URL = {name: f"http://127.0.0.1:{port}" for name, port in PORTS.items()}
MAILPIT = os.environ.get("MAILPIT_API", "http://127.0.0.1:8025/api/v1")
GRAPH = os.environ.get("GRAPH_CONTRACT_URL", "https://127.0.0.1:8443")  # the local Graph stand-in

console = Console(width=100)
clock = SystemClock()
T = TypeVar("T")


class DemoFailed(Exception):
    pass


def scene(title: str, text: str) -> None:
    console.print()
    console.rule(f"[bold cyan]{title}")
    console.print(text, style="dim")


def step(who: str, what: str) -> None:
    console.print(f"  [bold]{who:>10}[/bold] │ {what}")


async def until(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.3)
    raise DemoFailed(f"waited {timeout:.0f}s for {what}; see `make logs`")


@dataclass(frozen=True)
class Keys:
    portal: str
    staff: str
    scheduler: str
    auditor: str  # 監査 花子 (person demo.kansa.hanako): files disclosure requests
    her_approver: str  # her second key, with the approver role: still her, so it cannot approve hers
    approver: str  # 承認 太郎 (person demo.shonin.taro): the second person of four eyes (R11)


class Demo:
    def __init__(self, keys: Keys) -> None:
        portal_key, staff_key, auditor_key = keys.portal, keys.staff, keys.auditor
        self.scheduler_staff = {"X-Staff-Key": keys.scheduler}
        self.portal = httpx.AsyncClient(
            base_url=URL["booking"], timeout=15, headers={"Authorization": f"Bearer {portal_key}"}
        )
        self.staff = httpx.AsyncClient(
            base_url=URL["booking"], timeout=15, headers={"Authorization": f"Bearer {staff_key}"}
        )
        self.auditor, self.her_approver, self.approver = (
            httpx.AsyncClient(base_url=URL["audit"], timeout=15, headers={"Authorization": f"Bearer {k}"})
            for k in (auditor_key, keys.her_approver, keys.approver)
        )
        self.policies = ServiceSettings(extra_offices_dir=ROOT / "deploy" / "offices-demo").policies()
        self.booked: list[str] = []

    # ----------------------------------------------------------------- helpers

    async def book(self, office_id: str, form: dict[str, Any], label: str) -> httpx.Response:
        key = f"demo-{label}-{uuid.uuid4().hex[:8]}"
        step("portal", f"POST /v1/offices/{office_id}/bookings  (Idempotency-Key: {key})")
        r = await self.portal.post(
            f"/v1/offices/{office_id}/bookings", json=form, headers={"Idempotency-Key": key}
        )
        step("booking", f"{r.status_code} {json.dumps(r.json(), ensure_ascii=False)[:300]}")
        if r.status_code == 202:
            self.booked.append(r.json()["booking_id"])
        return r

    async def booking(self, booking_id: str) -> dict[str, Any]:
        r = await self.portal.get(f"/v1/bookings/{booking_id}")
        r.raise_for_status()
        return dict(r.json())

    async def status(self, booking_id: str, *wanted: str, timeout: float = 60.0) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            b = await self.booking(booking_id)
            return b if b["status"] in wanted else None

        return await until(probe, f"booking {booking_id[:8]} to become {' or '.join(wanted)}", timeout)

    async def confirmed(self, booking_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The booking once confirmed. The local database keeps what earlier runs, the tests and other
        traffic booked, and other requests' held alternatives: a time found free can be taken by the
        time the scheduler comes to this request. Then the person takes the first time proposed (R05)."""
        b = await self.status(
            booking_id, "confirmed", "recoordination_proposed", "awaiting_coordination", timeout=timeout
        )
        if b["status"] == "awaiting_coordination":
            raise DemoFailed(f"booking {booking_id[:8]}: no counsellor free and no alternative to propose")
        if b["status"] == "recoordination_proposed":
            option = b["alternatives"][0]
            when = option.get("when") or option["start"]
            step("scheduler", f"the wished time was taken meanwhile: proposed {when} and others (R05)")
            r = await self.portal.post(
                f"/v1/bookings/{booking_id}/alternatives/{option['option_id']}/acceptance"
            )
            step("person", f"accepts it: {r.status_code} {r.json().get('status')}")
            b = await self.status(booking_id, "confirmed", timeout=timeout)
        return b

    async def emails(self, address: str, n: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
        from services.notifier.preview import delivered_to

        async def probe() -> list[dict[str, Any]] | None:
            found = await delivered_to(address, MAILPIT)
            return found if len(found) >= n else None

        return await until(probe, f"{n} email(s) to {address}", timeout)

    def show_email(self, msg: dict[str, Any]) -> None:
        from services.notifier.preview import format_message

        console.print(
            Panel(format_message(msg, width=90), title="email as the person reads it", expand=False)
        )

    async def request_of(self, booking_id: str) -> dict[str, Any]:
        """The scheduler's view of the booking (its room, the counsellor's work email)."""
        staff = self.scheduler_staff
        async with httpx.AsyncClient(base_url=URL["scheduler"], timeout=10, headers=staff) as c:
            r = await c.get(f"/v1/staff/requests/{booking_id}")
            r.raise_for_status()
            return dict(r.json())

    async def graph_meeting(self, external_id: str) -> dict[str, Any]:
        """The Teams meeting as the local Graph contract server holds it."""
        ca = ssl.create_default_context(cafile=str(ROOT / ".local" / "graph" / "ca.pem"))
        async with httpx.AsyncClient(base_url=GRAPH, timeout=10, verify=ca) as c:
            meetings = (await c.get("/_contract/meetings")).raise_for_status().json()
        return next(m for m in meetings if m["externalId"] == external_id)

    async def invitation(self, msg: dict[str, Any]) -> str:
        """The email's calendar part (text/calendar, from the raw message), in one line per field."""
        async with httpx.AsyncClient(base_url=MAILPIT, timeout=10) as c:
            raw = (await c.get(f"/message/{msg['ID']}/raw")).raise_for_status().content
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        part = next(p for p in parsed.walk() if p.get_content_type() == "text/calendar")
        cal = icalendar.Calendar.from_ical(part.get_content())
        ev = next(iter(cal.walk("VEVENT")))
        start = ev.decoded("DTSTART")
        return (
            f"METHOD:{cal.get('METHOD')}  UID:{ev.get('UID')}  SEQUENCE:{ev.get('SEQUENCE')}\n"
            f"DTSTART:{start.isoformat()} ({start.tzinfo})  LOCATION:{ev.get('LOCATION')}"
        )

    async def counsellor_side(self, booking_id: str, n: int = 1) -> None:
        """The counsellor's email for this booking and its invitation (R16, issue 17)."""
        doc = await self.request_of(booking_id)
        to = doc["appointment"].get("counsellor_email")
        if not to:
            return
        mails = await self.emails(to, n)
        mine = [m for m in mails if booking_id[:8] in json.dumps(m, ensure_ascii=False)] or mails
        step("notifier", f"sent 「{mine[-1]['Subject']}」 to the counsellor {to}")
        self.show_email(mine[-1])
        step("", f"its invitation: {await self.invitation(mine[-1])}")

    def show_appointment(self, b: dict[str, Any]) -> None:
        a = b["appointment"]
        step("scheduler", f"coordinated {a['counsellor_name']} for {a['when']} (JST)")
        step("", f"meeting: {a['app']}  {a['meeting_url'][:70]}…")

    async def day_with_room(self, office_id: str, window: tuple[str, str], area: str | None) -> date:
        """The first bookable day on which a counsellor (serving `area`, R20) is free within the
        wished window: the local database keeps earlier demo runs' appointments on the first days."""
        policy = self.policies[office_id]
        cal, now = OfficeCalendar(policy), clock.now()
        lo, hi = (daytime.fromisoformat(t) for t in window)
        day = cal.first_bookable(now + timedelta(days=1))
        params = {"area": area} if area else {}
        scheduler = httpx.AsyncClient(base_url=URL["scheduler"], timeout=10, headers=self.scheduler_staff)
        async with scheduler as c:
            for _ in range(120):
                if cal.bookable(day, now):
                    r = await c.get(
                        f"/v1/staff/offices/{office_id}/free-slots", params={"day": day.isoformat(), **params}
                    )
                    r.raise_for_status()
                    for slot in r.json():
                        start = datetime.fromisoformat(slot["start"]).astimezone(JST)
                        if lo <= start.time() and (start + timedelta(minutes=30)).time() <= hi:
                            return day
                day += timedelta(days=1)
        raise DemoFailed(f"no counsellor free {window[0]}-{window[1]} at {office_id} in 120 days")

    async def minute_with_room(self, area: str, at_least_seconds: int) -> datetime:
        """The demo office's first start, at least `at_least_seconds` away, at which a counsellor
        serving `area` is free for 5 minutes: the local database keeps what earlier runs, the tests
        and other traffic booked at the demo office, so the next minute may well be taken."""
        earliest = clock.now() + timedelta(seconds=at_least_seconds)
        scheduler = httpx.AsyncClient(base_url=URL["scheduler"], timeout=10, headers=self.scheduler_staff)
        async with scheduler as c:
            for days in (0, 1):
                day = (earliest.astimezone(JST) + timedelta(days=days)).date()
                r = await c.get(
                    "/v1/staff/offices/demo-town/free-slots",
                    params={"day": day.isoformat(), "area": area, "duration_minutes": 5},
                )
                r.raise_for_status()
                for slot in r.json():
                    start = datetime.fromisoformat(slot["start"]).astimezone(JST)
                    if start >= earliest:
                        return start
        raise DemoFailed(f"no counsellor serving {area} free at demo-town today or tomorrow")

    async def soonest_minute(self, at_least_seconds: int) -> tuple[datetime, str]:
        """The earliest such start in any of the demo office's areas with a counsellor (other traffic
        may have filled one counsellor's next hour), with an address there (R20)."""
        found = [(await self.minute_with_room(area, at_least_seconds), area) for area in DEMO_ADDRESSES]
        start, area = min(found)
        return start, area

    # ----------------------------------------------------------------- scenes

    async def kg_booking(self) -> None:
        policy = self.policies["kushiro-gyosei"]
        area = policy.area_of(forms.KG_ADDRESS)
        day = await self.day_with_room("kushiro-gyosei", ("10:00", "12:00"), area)
        scene(
            "1. 釧路 (KG): a booking, coordinated and confirmed by email",
            "KG asks for name, address, phone, email and a wished range on a weekday (R02). The scheduler\n"
            "picks a commissioner serving the person's area (R20) and the office's app (R16); the\n"
            "confirmation email with date, time and URL goes out once coordinated (R05, R06).",
        )
        form = forms.kg_form(policy, day, clock.now())
        step("person", f"{form['name']}, {form['address']}, wishes {day} 10:00〜12:00, 30 minutes")
        r = await self.book("kushiro-gyosei", form, "kg")
        if r.status_code != 202:
            raise DemoFailed(f"KG booking refused: {r.text}")
        b = await self.confirmed(r.json()["booking_id"])
        self.show_appointment(b)
        bid = b["booking_id"]
        meeting = await self.graph_meeting(f"{bid}-v{b['appointment']['version']}")
        step(
            "Graph",
            f"createOrGet for {meeting['participants']['organizer']['upn']}: meeting {meeting['id'][:16]}…, "
            f"lobby {meeting['lobbyBypassSettings']['scope']} (the commissioner admits the person)",
        )
        step("", f"{meeting['joinWebUrl'][:60]}… opens the development room page")
        mails = await self.emails(form["email"])
        step("notifier", f"sent 「{mails[0]['Subject']}」 to {form['email']}")
        self.show_email(mails[0])
        step("", f"its invitation: {await self.invitation(mails[0])}")
        await self.counsellor_side(bid)
        self.kg_booking_id = bid

    async def kg_cancellation(self) -> None:
        scene(
            "1b. 釧路 (KG): the person phones to cancel; the Teams meeting is deleted",
            "Staff record the phone cancellation (R07). The scheduler frees the slot and deletes the\n"
            "meeting through Graph (R16); person and commissioner get a cancellation with METHOD:CANCEL.",
        )
        bid = self.kg_booking_id
        r = await self.staff.post(f"/v1/bookings/{bid}/cancellations", json={"channel": "phone"})
        step("staff", f"phone cancellation recorded: {r.status_code} {r.json().get('status')}")
        if r.status_code >= 300:
            raise DemoFailed(f"KG cancellation refused: {r.text}")

        async def deleted() -> dict[str, Any] | None:
            m = await self.graph_meeting(f"{bid}-v1")
            return m if m.get("deleted") else None

        meeting = await until(deleted, "the Teams meeting to be deleted through Graph", 60)
        step("Graph", f"DELETE onlineMeetings/{meeting['id'][:16]}…: the meeting is gone")
        doc = await self.request_of(bid)
        to = doc["appointment"]["counsellor_email"]
        mails = await self.emails(to, 2)
        step("notifier", f"sent 「{mails[-1]['Subject']}」 to the commissioner {to}")
        step("", f"its invitation: {await self.invitation(mails[-1])}")

    async def hw_booking(self) -> None:
        policy = self.policies["kohoku-hellowork"]
        now = clock.now()
        day = await self.day_with_room("kohoku-hellowork", ("13:00", "15:00"), None)
        number = f"14{uuid.uuid4().int % 1000:03d}-{uuid.uuid4().int % 10**8:08d}"
        phone, email = "045-123-4567", f"hanako.{uuid.uuid4().hex[:6]}@example.jp"
        scene(
            "2. 港北 (HW): a registered job seeker books; the notice waits for the day before",
            "HW serves job seekers registered at the office with My Page (R03); the phone must match the\n"
            "registered one (R02). The job-seeker system feeds the registry over AMQP. A booking must be\n"
            "confirmed 2 open days ahead (R04); the notice goes the day before (R06).",
        )
        msg = forms.jobseeker_message("kohoku-hellowork", number, phone, email, sent_at=now)
        await publish_intake("jobseeker.registered", msg)
        step("HW system", f"published jobseeker.registered {number} to consult.intake")
        form = forms.hw_form(policy, day, now, jobseeker_number=number, phone=phone)
        r = await until(lambda: self._hw_try(form), "the job seeker to be registered", 30)
        b = await self.confirmed(r.json()["booking_id"])
        self.show_appointment(b)
        a = b["appointment"]
        step("", f"a pre-issued TeleOffice room: meeting id {a['meeting_id']}, passcode {a['passcode']}")
        await self.counsellor_side(b["booking_id"])
        scheduler = httpx.AsyncClient(base_url=URL["scheduler"], timeout=10, headers=self.scheduler_staff)
        async with scheduler as c:
            timers = (await c.get("/v1/staff/timers", params={"office_id": "kohoku-hellowork"})).json()
        mine = [t for t in timers if t.get("booking_id") == b["booking_id"]]
        for t in mine:
            due = datetime.fromisoformat(t["due_at"])
            step("scheduler", f"timer {t['kind']:<8} due {format_jst(due)} JST")
        step(
            "",
            f"notice date {OfficeCalendar(policy).notice_date(day)}: "
            f"「{policy.notice.subject}」 to the My Page address",
        )

    async def _hw_try(self, form: dict[str, Any]) -> httpx.Response | None:
        r = await self.book("kohoku-hellowork", form, "hw")
        return r if r.status_code == 202 else None

    async def refusals(self) -> None:
        scene(
            "3. Refused, each with its rule",
            "Bad input gets 422 naming the field; what the office's rules refuse gets 409 naming the rule.",
        )
        hw, kg = self.policies["kohoku-hellowork"], self.policies["kushiro-gyosei"]
        now = clock.now()
        tomorrow = OfficeCalendar(hw).first_bookable(now)  # the earliest day HW still takes
        too_soon = now.astimezone(JST).date() + timedelta(days=1)
        while not OfficeCalendar(hw).is_open(too_soon):  # the next open day: fewer than 2 open days ahead
            too_soon += timedelta(days=1)
        kg_day = OfficeCalendar(kg).first_bookable(now + timedelta(days=1))
        cases = [
            (f"HW, consultation on {too_soon} (too late, R04)", "kohoku-hellowork",
             forms.hw_form(hw, too_soon, now, jobseeker_number="14000-00000001", phone="045-123-4567")),
            ("KG, 45 minutes (R01)", "kushiro-gyosei",
             forms.kg_form(kg, kg_day, now, duration_minutes=45)),
            ("KG, device checklist not confirmed (R19)", "kushiro-gyosei",
             forms.kg_form(kg, kg_day, now, device_checklist=[])),
            ("KG, stale terms version (R17)", "kushiro-gyosei",
             forms.kg_form(kg, kg_day, now, terms_version="2019-01-01")),
        ]  # fmt: skip
        table = Table("request", "answer", "rule / field", "message", width=100)
        for label, office, form in cases:
            r = await self.portal.post(
                f"/v1/offices/{office}/bookings", json=form, headers={"Idempotency-Key": uuid.uuid4().hex}
            )
            body = r.json()
            errors = body.get("errors") or []
            where = body.get("rule") or ", ".join(
                f"{e.get('rule') or ''} {e.get('field', '')}".strip() for e in errors[:2]
            ) + (f" (+{len(errors) - 2} more)" if len(errors) > 2 else "")
            table.add_row(label, str(r.status_code), str(where), str(body.get("message", ""))[:60])
        console.print(table)
        step("", f"(HW bookable from {tomorrow}; the 409 tells the portal why and which rule)")

    async def demo_office(self) -> None:
        policy = self.policies["demo-town"]
        scene(
            "4. デモ町 (demo office, short clocks): notice, then a no-show deemed cancelled",
            f"The demo office sends its notice {policy.notice.before_start} before the start and deems a\n"
            f"booking cancelled {policy.no_show_grace} after it (R08; 10 minutes at real offices), so the\n"
            "durable timers can be watched firing. Nobody joins this one.",
        )
        start, area = await self.soonest_minute(25)
        email = f"demo.{uuid.uuid4().hex[:6]}@example.jp"
        form = demo_form(policy, start, email, DEMO_ADDRESSES[area])
        r = await self.book("demo-town", form, "noshow")
        b = await self.status(r.json()["booking_id"], "confirmed")
        self.show_appointment(b)
        lead = policy.notice.before_start or timedelta(0)
        step("", f"waiting for the notice ({format_jst(start - lead)}) …")
        ahead = max((start - clock.now()).total_seconds(), 0.0)
        notice = (await self.emails(email, 1, timeout=ahead + 90))[0]
        step(
            "notifier",
            f"notice 「{notice['Subject']}」 sent at {format_jst(datetime.fromisoformat(notice['Date']))}",
        )
        step("", f"waiting for start + grace ({format_jst(start + policy.no_show_grace)}) …")
        b = await self.status(b["booking_id"], "cancelled", timeout=120)
        step("booking", f"status {b['status']}: {json.dumps(b.get('cancellation'), ensure_ascii=False)}")
        mails = await self.emails(email, 2, timeout=60)
        self.show_email(mails[-1])

    async def recoordination(self) -> None:
        policy = self.policies["demo-town"]
        scene(
            "5. デモ町: the wished time is taken, other times are proposed and one is accepted (R05)",
            "Two people in 釧路 wish the same minute; one commissioner serves 釧路. The second request gets\n"
            "up to three held alternatives by email; the person accepts the first through the portal.",
        )
        start = await self.minute_with_room("釧路", 90)
        first = demo_form(policy, start, f"first.{uuid.uuid4().hex[:6]}@example.jp", "北海道釧路市幸町1-1")
        email = f"second.{uuid.uuid4().hex[:6]}@example.jp"
        second = demo_form(policy, start, email, "北海道釧路市幸町2-2")
        a = await self.book("demo-town", first, "first")
        await self.confirmed(a.json()["booking_id"])
        b = await self.book("demo-town", second, "second")
        prop = await self.status(b.json()["booking_id"], "recoordination_proposed")
        for alt in prop["alternatives"]:
            step("scheduler", f"option {alt['option_id']}: {alt.get('when') or alt['start']}")
        mail = (await self.emails(email, 1))[0]
        step("notifier", f"sent 「{mail['Subject']}」")
        option = prop["alternatives"][0]["option_id"]
        step("person", f"accepts option {option}")
        r = await self.portal.post(f"/v1/bookings/{prop['booking_id']}/alternatives/{option}/acceptance")
        step("booking", f"{r.status_code} status {r.json().get('status')}")
        confirmed = await self.status(prop["booking_id"], "confirmed")
        self.show_appointment(confirmed)
        # the first person cancels through the portal (the demo office accepts it, R07 as data)
        r = await self.portal.post(
            f"/v1/bookings/{a.json()['booking_id']}/cancellations", json={"channel": "portal"}
        )
        step("portal", f"first person cancels via portal: {r.status_code} {r.json().get('status')}")

    async def audit(self) -> None:
        scene(
            "6. The audit trail (R10, R11): events, devices pseudonymised, four eyes, chain verified",
            "Auditors read with their own key; device identifiers are stored only as keyed-hash pseudonyms; "
            "a legal disclosure is decided by a second person, not by a second key of the first.",
        )
        r = await self.auditor.get(
            "/v1/audit/records", params={"booking_id": self.kg_booking_id, "limit": 50}
        )
        r.raise_for_status()
        table = Table("occurred (JST)", "type", "producer", width=100)
        for rec in r.json():
            when = rec.get("occurred_at") or rec.get("at") or ""
            table.add_row(
                format_jst(datetime.fromisoformat(when)) if when else "",
                rec.get("type", ""),
                rec.get("producer", ""),
            )
        console.print(table)
        unauth = await httpx.AsyncClient(base_url=URL["audit"]).get("/v1/audit/records")
        step("portal", f"reading the audit store without an auditor key: {unauth.status_code}")
        await self.four_eyes()
        v = (await self.auditor.get("/v1/audit/verify")).json()
        step(
            "audit",
            f"hash chains verified: ok={v.get('ok')} ({_streams(v)})",
        )

    async def four_eyes(self) -> None:
        """R11: a legal disclosure is decided by a second PERSON, whatever keys the first one holds."""
        body = {
            "legal_basis": "刑事訴訟法第197条第2項(捜査関係事項照会)",
            "authority": "北海道警察釧路方面本部",
            "reference_number": "釧方刑第1234号(デモ)",
            "scope": {"booking_id": self.kg_booking_id},
        }
        r = await self.auditor.post("/v1/audit/disclosures", json=body)
        if r.status_code != 201:
            raise DemoFailed(f"disclosure request: {r.status_code} {r.text}")
        dr = r.json()["disclosure_id"]
        step(
            "auditor",
            f"{r.json()['requested_by_person']} files disclosure request {dr} (legal basis, authority)",
        )
        own = await self.her_approver.post(f"/v1/audit/disclosures/{dr}/approve")
        if own.status_code != 409:
            raise DemoFailed(f"the requester's second key decided her own request: {own.status_code}")
        step("auditor", f"she tries to approve it with her second key (approver role): {own.status_code} "
                        f"{own.json().get('rule')} (four eyes compare people, not keys)")  # fmt: skip
        ok = await self.approver.post(
            f"/v1/audit/disclosures/{dr}/approve", json={"reason": "照会書原本確認済"}
        )
        if ok.status_code != 200:
            raise DemoFailed(f"approval by another person: {ok.status_code} {ok.text}")
        step("approver", f"{ok.json()['decided_by_person']} approves: {ok.json()['status']}")
        opened = await self.auditor.post(f"/v1/audit/disclosures/{dr}/open")
        if opened.status_code != 200:
            raise DemoFailed(f"opening the approved disclosure: {opened.status_code} {opened.text}")
        step("audit", f"the requester opens it: {len(opened.json()['records'])} sealed record(s) in scope, "
                      "the opening itself recorded before the values are shown")  # fmt: skip

    async def close(self) -> None:
        for c in (self.portal, self.staff, self.auditor, self.her_approver, self.approver):
            await c.aclose()


def _streams(report: dict[str, Any]) -> str:
    return ", ".join(f"{s['stream']}: {s['checked']} records" for s in report.get("streams", []))


def demo_form(policy: Any, start: datetime, email: str, address: str) -> dict[str, Any]:
    return forms.kg_form(
        policy,
        start.date(),
        clock.now(),
        window=(f"{start:%H:%M}", f"{start + timedelta(minutes=5):%H:%M}"),
        duration_minutes=5,
        email=email,
        address=address,
    )


DEMO_PORTAL_USER = topology.portal_user("dev-portal")  # the portal the services' dev key is for


def portal_amqp_url() -> str:
    """The dev portal's own broker user (publishes intake commands only, R12; each portal its own,
    issue 14) on the broker of AMQP_URL (default: the local one), once `make infra-up` has made it."""
    base = urlsplit(os.environ.get("AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/")
    password = ROOT / ".local" / "secrets" / f"rabbitmq-{DEMO_PORTAL_USER}.password"
    if not password.exists():
        sys.exit(f"demo: no broker user {DEMO_PORTAL_USER} yet: `make infra-up` makes it")
    netloc = f"{DEMO_PORTAL_USER}:{password.read_text().strip()}@{base.hostname}:{base.port or 5672}"
    return urlunsplit((base.scheme, netloc, base.path or "/", base.query, ""))


async def publish_intake(routing_key: str, message: dict[str, Any]) -> None:
    url = portal_amqp_url()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(topology.INTAKE)
        await exchange.publish(
            aio_pika.Message(
                json.dumps(message, ensure_ascii=False).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                user_id=urlsplit(url).username,  # RabbitMQ checks it; booking checks the portal by it
            ),
            routing_key=routing_key,
            mandatory=True,
        )


async def credentials() -> Keys:
    from services.audit.admin import create_key
    from services.audit.config import Settings as AuditSettings
    from services.booking.ops import ensure_dev_key
    from services.scheduler.keys import ensure_dev_key as ensure_scheduler_key

    async def audit_key(name: str, person: str, role: str) -> str:
        return await create_key(AuditSettings(), name=name, person=person, roles=[role], by="make demo")

    hanako, taro = ("監査 花子", "demo.kansa.hanako"), ("承認 太郎", "demo.shonin.taro")
    return Keys(
        portal=await ensure_dev_key(ROOT / ".local" / "portal-key.txt", "portal"),
        staff=await ensure_dev_key(ROOT / ".local" / "staff-key.txt", "staff"),
        scheduler=await ensure_scheduler_key(ROOT / ".local" / "scheduler-staff-key.txt"),
        auditor=await audit_key(*hanako, "auditor"),
        her_approver=await audit_key(*hanako, "disclosure-approver"),
        approver=await audit_key(*taro, "disclosure-approver"),
    )


async def settled_backlog(timeout: float = 600.0) -> None:
    """Wait until the services have worked through what other traffic left queued (the demo's
    short clocks need a scheduler that answers within seconds); the broker's management API says."""
    api = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/api")
    inboxes = [f"{name}.inbox" for name in PORTS]
    async with httpx.AsyncClient(timeout=10) as c:

        async def queued() -> int | None:
            try:
                r = await c.get(f"{api.rstrip('/')}/queues/%2F", params={"columns": "name,messages"})
                r.raise_for_status()
            except httpx.HTTPError:
                return None  # no management API here: nothing to wait for
            return sum(int(q.get("messages") or 0) for q in r.json() if q["name"] in inboxes)

        first = await queued()
        if not first:
            return
        step("broker", f"{first} message(s) of earlier traffic still queued; waiting for the services")
        await until(lambda: _none_left(queued), f"the {first} queued message(s) to be handled", timeout)


async def _none_left(queued: Callable[[], Awaitable[int | None]]) -> bool:
    return not await queued()


async def main() -> int:
    console.print(Panel.fit(
        "[bold]Online consultation booking — demo[/bold]\n"
        "booking :8001 · scheduler :8002 · notifier :8003 · audit :8004 · RabbitMQ :5672 · "
        "FerretDB :27017 · Mailpit :8025\nTimes are shown in JST (Asia/Tokyo).",
    ))  # fmt: skip
    demo = Demo(await credentials())
    started = time.monotonic()
    try:
        await settled_backlog()
        for part in (
            demo.kg_booking,
            demo.kg_cancellation,
            demo.hw_booking,
            demo.refusals,
            demo.demo_office,
            demo.recoordination,
            demo.audit,
        ):
            await part()
    except DemoFailed as exc:
        console.print(f"[bold red]demo stopped:[/bold red] {exc}")
        return 1
    finally:
        await demo.close()
    console.print()
    console.rule(f"[bold green]done in {time.monotonic() - started:.0f}s")
    console.print(
        "The services keep running: Mailpit http://127.0.0.1:8025 shows the emails, "
        "`make logs` follows the services, `.venv/bin/consultctl queues` shows the broker, "
        "`make down` stops it all."
    )
    console_sign_in()
    return 0


def console_sign_in() -> None:
    """The demo's last lines: where the console is and how to sign in to it (development only)."""
    password = CONSOLE_PASSWORD.read_text().strip() if CONSOLE_PASSWORD.exists() else "(make up writes it)"
    console.print()
    console.print(f"[bold]Console (staff and auditors):[/bold] {URL['console']}/signin")
    console.print(
        f"  development sign-in: [bold]dev.staff[/bold] / {password}   "
        "(also dev.auditor, dev.approver, dev.counsellor; same password)"
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
