"""Issue 17 through real RabbitMQ, FerretDB and Mailpit: the calendar part as a receiver gets it, the
counsellor's emails (assignment, change with the same or another counsellor, cancellation), and the
daily agenda sent once per counsellor and day by two notifier replicas driven by one clock.

Each test finds its own mail by unique addresses, and reads the calendar part from the message as
Mailpit stored it (`/api/v1/message/{ID}/raw`: Mailpit lists attachments and inline parts, not the
text/calendar alternative, which is what a mail client reads).
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from icalendar import Calendar
from pymongo import monitoring

from examples import notices
from services.notifier.agenda import counsellor_day_id
from services.notifier.config import Settings
from services.notifier.domain import Kind
from shared.clock import JST, FixedClock
from shared.events import Appointment, PersonBrief, Recipient
from tests.integration.test_notifier_delivery import HW, KG, Notifier, running
from tests.support import CommandShapes, Mailpit, eventually, unique

SENDER = Settings.model_fields["mail_from"].default
PHONE = "090-1234-5678"


@pytest.fixture
async def notifier(make_settings: Callable[..., Settings]) -> AsyncIterator[Notifier]:
    async with running(make_settings(Settings)) as n:
        yield n


def person(prefix: str) -> Recipient:
    return Recipient(name="山田 太郎", email=f"{unique(prefix + '-')}@example.org")


def counsellor(
    policy: Any, booking_id: str, cid: str, *, start: datetime, version: int = 1, **kw: Any
) -> Appointment:
    """An appointment with counsellor `cid`, whose work address is unique to this test run."""
    return notices.appointment(
        policy,
        booking_id,
        start=start,
        version=version,
        counsellor_id=cid,
        counsellor_name=f"相談員 {cid}",
        counsellor_email=f"{cid}@counsellors.example.org",
        **kw,
    )


async def mails(mailpit: Mailpit, address: str, n: int = 1, subject: str = "") -> list[dict[str, Any]]:
    """Wait until `address` has at least n messages (with `subject` in their subject), oldest first."""

    async def enough() -> list[dict[str, Any]]:
        found = [m for m in await mailpit.to(address) if subject in m["Subject"]]
        return list(reversed(found)) if len(found) >= n else []

    return await eventually(enough, timeout=60, what=f"{n} mail(s) to {address} {subject!r}".strip())


async def raw(mailpit: Mailpit, message_id: str) -> EmailMessage:
    """The message as Mailpit received it, parsed as a mail client would."""
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{mailpit.api}/message/{message_id}/raw")
        r.raise_for_status()
    return email.message_from_bytes(r.content, policy=email.policy.default)  # type: ignore[return-value]


async def invitation(mailpit: Mailpit, summary: dict[str, Any]) -> tuple[EmailMessage, Calendar, Any]:
    """The delivered message, its calendar part parsed back, and the part's one VEVENT."""
    msg = await raw(mailpit, summary["ID"])
    parts = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1, [p.get_content_type() for p in msg.walk()]
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    cal = Calendar.from_ical(payload)
    [event] = cal.walk("VEVENT")
    return parts[0], cal, event  # type: ignore[return-value]


def check_entry(
    part: EmailMessage,
    cal: Calendar,
    ev: Any,
    a: Appointment,
    *,
    uid: str,
    sequence: int,
    method: str,
    secrets: tuple[str, ...],
) -> None:
    """Every field of a delivered calendar entry."""
    assert part.get_param("method") == method
    assert str(part.get_param("charset")).upper() == "UTF-8"
    assert str(cal["METHOD"]) == method
    assert str(ev["UID"]) == uid
    assert int(ev["SEQUENCE"]) == sequence
    assert str(ev["STATUS"]) == ("CANCELLED" if method == "CANCEL" else "CONFIRMED")
    assert ev["DTSTART"].params["TZID"] == "Asia/Tokyo" == ev["DTEND"].params["TZID"]
    assert ev.decoded("DTSTART") == a.start and ev.decoded("DTEND") == a.end
    assert ev.decoded("DTSTART").utcoffset() == timedelta(hours=9)
    assert [str(z["TZID"]) for z in cal.walk("VTIMEZONE")] == ["Asia/Tokyo"]
    assert str(ev["LOCATION"]) == a.meeting_url == str(ev["URL"])
    assert str(ev["ORGANIZER"]) == f"mailto:{SENDER}"
    text = cal.to_ical().decode()
    for secret in secrets:
        assert secret not in text, secret


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=JST)


# --------------------------------------------------------------------------- the person's calendar entry


async def test_the_persons_entry_is_requested_updated_and_cancelled_under_one_uid(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    who, booking, cid = person("ics-kg"), unique("b-"), unique("kg-c")
    v1 = counsellor(KG, booking, cid, start=notices.START, meeting_id="111 222", passcode="pc1")
    v2 = counsellor(KG, booking, cid, start=notices.START + timedelta(days=1, hours=3), version=2)
    uid = f"{booking}@kushiro-gyosei.consult"
    secrets = (who.email, who.name, PHONE)

    await notifier.publish(
        notices.event(Kind.CONFIRMATION, KG, booking_id=booking, recipient=who, appointment=v1)
    )
    [first] = await mails(mailpit, who.email)
    assert first["Subject"] == KG.notice.subject
    check_entry(*await invitation(mailpit, first), v1, uid=uid, sequence=1, method="REQUEST", secrets=secrets)
    _, _, ev = await invitation(mailpit, first)
    assert "111 222" in str(ev["DESCRIPTION"]) and "pc1" in str(ev["DESCRIPTION"])

    moved = notices.event(
        Kind.CONFIRMATION, KG, booking_id=booking, recipient=who, appointment=v2, previous=v1
    )
    await notifier.publish(moved)
    _, change = await mails(mailpit, who.email, 2)
    assert change["Subject"] == "【オンライン相談】実施日時の変更のお知らせ"
    check_entry(
        *await invitation(mailpit, change), v2, uid=uid, sequence=2, method="REQUEST", secrets=secrets
    )
    text = (await mailpit.message(change["ID"]))["Text"]
    assert "2026年11月25日(水) 10:00〜10:30" in text  # before
    assert "2026年11月26日(木) 13:00〜13:30" in text  # after

    cancelled = notices.event(Kind.CANCELLATION, KG, booking_id=booking, recipient=who, appointment=v2)
    await notifier.publish(cancelled)
    *_, cancel = await mails(mailpit, who.email, 3)
    assert cancel["Subject"] == "【オンライン相談】予約取消しのお知らせ"
    check_entry(*await invitation(mailpit, cancel), v2, uid=uid, sequence=3, method="CANCEL", secrets=secrets)

    await notifier.publish(moved)  # a redelivery: nothing new, for the person or the counsellor
    await notifier.publish(cancelled)
    await notifier.quiet()
    assert len(await mailpit.to(who.email)) == 3
    assert len(await mailpit.to(v1.counsellor_email or "")) == 3  # assignment, change, cancellation


# --------------------------------------------------------------------------- the counsellor's emails


async def test_an_assignment_reaches_the_counsellor_with_what_the_session_needs_and_no_contact_data(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    who, booking = person("hw-assign"), unique("b-")
    cid = unique("hw-c")
    a = counsellor(HW, booking, cid, start=notices.START, meeting_id="987 654", passcode="k7Q2")
    brief = PersonBrief(name=who.name, topic="応募書類の書き方について", jobseeker_number="1401-123456-7")
    event = notices.event(
        Kind.CONFIRMATION, HW, booking_id=booking, recipient=who, appointment=a, person=brief
    )
    await notifier.publish(event, times=2)
    [summary] = await mails(mailpit, a.counsellor_email or "")
    msg = await mailpit.message(summary["ID"])
    assert msg["Subject"] == "【オンライン職業相談】担当する相談のお知らせ"
    assert msg["To"][0]["Address"] == a.counsellor_email
    for body in (msg["Text"], msg["HTML"]):
        assert "2026年11月25日(水) 10:00〜10:30" in body
        assert "TeleOffice" in body
        assert a.meeting_url in body
        assert "987 654" in body and "k7Q2" in body
        assert "山田 太郎 様" in body
        assert "応募書類の書き方について" in body
        assert "1401-123456-7" in body  # HW: the job-seeker number
        assert who.email not in body and PHONE not in body
    part, cal, ev = await invitation(mailpit, summary)
    check_entry(
        part,
        cal,
        ev,
        a,
        uid=f"{booking}.{cid}@kohoku-hellowork.consult",
        sequence=1,
        method="REQUEST",
        secrets=(who.email, who.name, PHONE, "1401-123456-7", "応募書類"),
    )
    whole = (await raw(mailpit, summary["ID"])).as_string()
    assert who.email not in whole
    await notifier.quiet()
    assert await mailpit.to(who.email) == []  # HW writes to the person only the day before (R06)
    assert len(await mailpit.to(a.counsellor_email or "")) == 1  # the event came twice: one email
    record = await notifier.service.deliveries.get(f"{booking}/counsellor_assignment/v1")
    assert record is not None and record["state"] == "sent"
    assert who.email not in str(record)


async def test_a_move_with_the_same_counsellor_updates_their_entry(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    who, booking, cid = person("hw-same"), unique("b-"), unique("hw-c")
    v1 = counsellor(HW, booking, cid, start=notices.START)
    v2 = counsellor(HW, booking, cid, start=notices.START + timedelta(days=2, hours=-1), version=2)
    await notifier.publish(
        notices.event(Kind.CONFIRMATION, HW, booking_id=booking, recipient=who, appointment=v1)
    )
    await mails(mailpit, v1.counsellor_email or "")
    await notifier.publish(
        notices.event(Kind.CONFIRMATION, HW, booking_id=booking, recipient=who, appointment=v2, previous=v1)
    )
    _, update = await mails(mailpit, v2.counsellor_email or "", 2)
    msg = await mailpit.message(update["ID"])
    assert msg["Subject"] == "【オンライン職業相談】担当する相談の日時変更のお知らせ"
    assert "■ 変更前の実施日時\r\n実施日時：2026年11月25日(水) 10:00〜10:30" in msg["Text"]
    assert "2026年11月27日(金) 09:00〜09:30" in msg["Text"]
    check_entry(
        *await invitation(mailpit, update),
        v2,
        uid=f"{booking}.{cid}@kohoku-hellowork.consult",
        sequence=2,
        method="REQUEST",
        secrets=(who.email, who.name),
    )


async def test_a_move_to_another_counsellor_assigns_the_new_one_and_cancels_the_previous_ones_entry(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    who, booking = person("kg-other"), unique("b-")
    old_c, new_c = unique("kg-old"), unique("kg-new")
    v1 = counsellor(KG, booking, old_c, start=notices.START)
    v2 = counsellor(KG, booking, new_c, start=notices.START + timedelta(hours=4), version=2)
    await notifier.publish(
        notices.event(Kind.CONFIRMATION, KG, booking_id=booking, recipient=who, appointment=v1)
    )
    await mails(mailpit, v1.counsellor_email or "")
    await notifier.publish(
        notices.event(Kind.CONFIRMATION, KG, booking_id=booking, recipient=who, appointment=v2, previous=v1)
    )
    [assigned] = await mails(mailpit, v2.counsellor_email or "")
    _, cancelled = await mails(mailpit, v1.counsellor_email or "", 2)
    new_msg = await mailpit.message(assigned["ID"])
    assert new_msg["Subject"] == "【オンライン相談】担当する相談のお知らせ"
    assert "2026年11月25日(水) 14:00〜14:30" in new_msg["Text"]
    check_entry(
        *await invitation(mailpit, assigned),
        v2,
        uid=f"{booking}.{new_c}@kushiro-gyosei.consult",
        sequence=2,
        method="REQUEST",
        secrets=(who.email, who.name),
    )
    old_msg = await mailpit.message(cancelled["ID"])
    assert old_msg["Subject"] == "【オンライン相談】担当する相談の取消しのお知らせ"
    assert "担当が変更になりました" in old_msg["Text"]
    assert "2026年11月25日(水) 10:00〜10:30" in old_msg["Text"]
    check_entry(
        *await invitation(mailpit, cancelled),
        v1,
        uid=f"{booking}.{old_c}@kushiro-gyosei.consult",
        sequence=2,  # above the request the previous counsellor holds (v1)
        method="CANCEL",
        secrets=(who.email, who.name),
    )
    # the person (KG confirms by email) was told of the change, once
    assert [m["Subject"] for m in reversed(await mailpit.to(who.email))] == [
        KG.notice.subject,
        "【オンライン相談】実施日時の変更のお知らせ",
    ]


async def test_a_cancellation_reaches_the_counsellor_with_the_recipients_name(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    who, booking, cid = person("hw-cancel"), unique("b-"), unique("hw-c")
    a = counsellor(HW, booking, cid, start=notices.START)
    event = notices.event(Kind.CANCELLATION, HW, booking_id=booking, recipient=who, appointment=a)
    await notifier.publish(event)
    [summary] = await mails(mailpit, a.counsellor_email or "")
    msg = await mailpit.message(summary["ID"])
    assert msg["Subject"] == "【オンライン職業相談】担当する相談の取消しのお知らせ"
    assert "相談者：山田 太郎 様" in msg["Text"]
    assert "2026年11月25日(水) 10:00〜10:30" in msg["Text"]
    assert who.email not in msg["Text"] + msg["HTML"]
    check_entry(
        *await invitation(mailpit, summary),
        a,
        uid=f"{booking}.{cid}@kohoku-hellowork.consult",
        sequence=2,
        method="CANCEL",
        secrets=(who.email, who.name),
    )
    # the person's own cancellation carries the cancellation of their entry
    [theirs] = await mails(mailpit, who.email)
    check_entry(
        *await invitation(mailpit, theirs),
        a,
        uid=f"{booking}@kohoku-hellowork.consult",
        sequence=2,
        method="CANCEL",
        secrets=(who.email, who.name, PHONE),
    )
    sent = await notifier.wait_events("notification.sent", 2)
    assert {e["payload"]["kind"] for e in sent} == {"cancellation", "counsellor_cancellation"}


# --------------------------------------------------------------------------- the agenda


AGENDA_COLLECTIONS = tuple(
    f"{name}{suffix}"
    for name in ("counsellor_days", "office_days", "agenda_bookings")
    for suffix in ("", "_changes")
)
THU, FRI = at(2026, 11, 26, 0), at(2026, 11, 27, 0)


@dataclass
class Week:
    """Two counsellors' consultations on Thursday 26 and Friday 27 November 2026 (HW)."""

    tanaka: str = field(default_factory=lambda: unique("hw-tanaka-"))
    suzuki: str = field(default_factory=lambda: unique("hw-suzuki-"))
    people: dict[str, Recipient] = field(default_factory=lambda: {n: person("agenda") for n in "abcd"})
    bookings: dict[str, str] = field(default_factory=lambda: {n: unique(f"b-{n}-") for n in "abcd"})

    def appt(self, name: str, cid: str, start: datetime, version: int = 1) -> Appointment:
        return counsellor(HW, self.bookings[name], cid, start=start, version=version)

    def confirmed(self, name: str, a: Appointment, **kw: Any) -> Any:
        brief = PersonBrief(name=f"相談者{name.upper()}", topic=f"話題{name}", jobseeker_number=f"JS-{name}")
        return notices.event(
            Kind.CONFIRMATION,
            HW,
            booking_id=self.bookings[name],
            recipient=self.people[name],
            appointment=a,
            person=brief,
            **kw,
        )

    async def book(self, one: Notifier, two: Notifier, mailpit: Mailpit) -> None:
        """Thursday: tanaka 10:00 (b) and 14:00 (a), 11:00 (c) cancelled; suzuki 13:00 (d) moved to
        Friday 13:00. Half the events through each replica; returns once every counsellor email is in."""
        self.a14 = self.appt("a", self.tanaka, THU + timedelta(hours=14))
        self.b10 = self.appt("b", self.tanaka, THU + timedelta(hours=10))
        c11 = self.appt("c", self.tanaka, THU + timedelta(hours=11))
        d13 = self.appt("d", self.suzuki, THU + timedelta(hours=13))
        for name, a in (("a", self.a14), ("b", self.b10), ("c", c11), ("d", d13)):
            await one.publish(self.confirmed(name, a))
        cancel_c = notices.event(
            Kind.CANCELLATION, HW, booking_id=self.bookings["c"], recipient=self.people["c"], appointment=c11
        )
        await two.publish(cancel_c)
        await two.publish(
            self.confirmed("d", self.appt("d", self.suzuki, FRI + timedelta(hours=13), 2), previous=d13)
        )
        await mails(mailpit, self.mail(self.tanaka), 4)  # three assignments, one cancellation
        await mails(mailpit, self.mail(self.suzuki), 2)  # assignment, change

    @staticmethod
    def mail(cid: str) -> str:
        return f"{cid}@counsellors.example.org"


async def agendas(mailpit: Mailpit, address: str) -> list[dict[str, Any]]:
    return [m for m in await mailpit.to(address) if "相談予定" in m["Subject"]]


async def more_ticks(replicas: tuple[Notifier, ...], n: int, what: str) -> None:
    """Until each replica's agenda job has looked n more times (negative checks: nothing more sent)."""
    base = max(r.service.agenda.ticks for r in replicas)

    async def ticked() -> bool:
        return all(r.service.agenda.ticks >= base + n for r in replicas)

    await eventually(ticked, what=f"{n} more agenda ticks of each replica ({what})")


def check_thursday(msg: dict[str, Any], week: Week) -> None:
    assert msg["Subject"] == "【オンライン職業相談】11月26日(木)の相談予定"
    text = msg["Text"]
    assert "（2件、日本時間）" in text
    assert text.index("■ 10:00〜10:30") < text.index("■ 14:00〜14:30")
    assert "■ 11:00" not in text and "相談者C" not in text  # cancelled
    for name, a in (("a", week.a14), ("b", week.b10)):
        assert f"相談者{name.upper()} 様" in text
        assert f"話題{name}" in text
        assert f"JS-{name}" in text  # HW: the job-seeker number
        assert a.meeting_url in text
    assert "TeleOffice" in text
    for who in week.people.values():
        assert who.email not in text + msg["HTML"]


async def check_sealed(one: Notifier, week: Week) -> None:
    """R12: what is kept of Thursday rests sealed, in the head and in every version."""
    db = one.runtime.db
    day_id = counsellor_day_id(week.tanaka, THU.date())
    kept = [await db["counsellor_days"].find_one({"_id": day_id})]
    kept += await db["counsellor_days_changes"].find({"aggregate_id": day_id}).to_list()
    assert len(kept) >= 4
    for doc in kept:
        assert doc is not None
        for secret in ("相談者A", "話題a", "JS-a", week.a14.meeting_url, week.mail(week.tanaka)):
            assert secret not in str(doc)


async def check_forgotten(one: Notifier, week: Week) -> None:
    db = one.runtime.db
    day_id = counsellor_day_id(week.tanaka, THU.date())

    left = {
        "counsellor_days": day_id,
        "counsellor_days_changes": f"{day_id}:00000001",
        "agenda_bookings": week.bookings["a"],
        "office_days": f"{HW.office_id}:2026-11-26",
    }

    async def forgotten() -> bool:  # one pass deletes them one after another: wait for the last
        return all([await db[name].find_one({"_id": _id}) is None for name, _id in left.items()])

    await eventually(forgotten, what=f"{day_id}, its changes, bookings and office day deleted once over")


async def test_the_agenda_goes_once_per_counsellor_and_day_from_two_replicas(
    make_settings: Callable[..., Settings], mailpit: Mailpit
) -> None:
    shapes = CommandShapes(AGENDA_COLLECTIONS)
    monitoring.register(shapes)  # the clients made from here on report their commands to it
    clock = FixedClock(at(2026, 11, 25, 12, 0))  # Wednesday noon: Thursday's agenda not due yet
    settings = make_settings(Settings, agenda_poll_seconds=0.1)
    week = Week()
    tanaka, suzuki = week.mail(week.tanaka), week.mail(week.suzuki)
    shapes.on = True
    try:
        async with running(settings, clock=clock) as one, running(settings, clock=clock) as two:
            replicas = (one, two)
            await week.book(one, two, mailpit)
            await more_ticks(replicas, 3, "at noon")
            assert await agendas(mailpit, tanaka) == []

            clock.set(at(2026, 11, 25, 17, 0))  # Wednesday 17:00 JST: Thursday's agenda is due
            [agenda] = await eventually(lambda: agendas(mailpit, tanaka), timeout=60, what="tanaka's agenda")
            await more_ticks(replicas, 5, "after Thursday's agenda went")
            assert len(await agendas(mailpit, tanaka)) == 1  # once, from two replicas ticking
            assert await agendas(mailpit, suzuki) == []  # their one Thursday consultation moved
            check_thursday(await mailpit.message(agenda["ID"]), week)
            key = f"counsellor:{week.tanaka}/counsellor_agenda/2026-11-26"
            record = await one.service.deliveries.get(key)
            assert record is not None and record["state"] == "sent" and record["attempts"] == 1

            async def sent_events() -> list[dict[str, Any]]:
                return [e for e in one.events("notification.sent") if e["payload"]["delivery_key"] == key]

            sent = await eventually(sent_events, what="notification.sent of the agenda")
            # one event (each replica's outbox relay may publish it; consumers dedupe by event id)
            assert len({e["event_id"] for e in sent}) == 1
            assert sent[0]["payload"]["kind"] == "counsellor_agenda"
            shapes.on = False  # this check reads by another filter
            await check_sealed(one, week)
            shapes.on = True

            clock.set(at(2026, 11, 26, 17, 0))  # Thursday 17:00: Friday's agenda (suzuki's moved one)
            [friday] = await eventually(lambda: agendas(mailpit, suzuki), timeout=60, what="suzuki's agenda")
            assert friday["Subject"] == "【オンライン職業相談】11月27日(金)の相談予定"
            friday_text = (await mailpit.message(friday["ID"]))["Text"]
            assert "■ 13:00〜13:30" in friday_text and "相談者D 様" in friday_text
            await more_ticks(replicas, 3, "after Friday's agenda went")
            assert len(await agendas(mailpit, tanaka)) == 1  # nothing of theirs on Friday
            assert len(await agendas(mailpit, suzuki)) == 1
            assert len({e["event_id"] for e in await sent_events()}) == 1

            clock.set(at(2026, 11, 28, 9, 0))  # Saturday: the days that are over are deleted (R12)
            await check_forgotten(one, week)
            shapes.on = False
    finally:
        shapes.on = False
    # FerretDB answers only {_id: value} from an index: the agenda reads and writes by nothing else
    assert shapes.seen, "no agenda command was recorded"
    assert shapes.scans() == []
