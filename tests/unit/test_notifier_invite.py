"""The calendar part of the emails (issue 17), as a receiver parses it: every field checked, no servers."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from icalendar import Calendar

from examples import notices
from services.notifier.compose import Composer
from services.notifier.domain import Kind, Notice, message_id, plan, plan_all
from shared.clock import JST
from shared.events import Recipient
from shared.policy import OfficePolicy
from shared.settings import ServiceSettings

POLICIES = ServiceSettings().policies()
KG: OfficePolicy = POLICIES["kushiro-gyosei"]
HW: OfficePolicy = POLICIES["kohoku-hellowork"]
SENDER = "no-reply@consult.example.org"
COMPOSER = Composer(SENDER)
WHO = Recipient(name="山田 太郎", email="taro.yamada@example.org")
#: the person's phone as booking holds it (it never reaches the notifier; checked all the same)
PHONE = "090-1234-5678"


def received(notice: Notice, policy: OfficePolicy) -> EmailMessage:
    msg = COMPOSER.compose(notice, policy, message_id=message_id(notice.key, "x.org"), now=notices.NOW)
    return email.message_from_bytes(bytes(msg), policy=email.policy.default)  # type: ignore[return-value]


def calendar_part(msg: EmailMessage) -> EmailMessage:
    parts = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    assert len(parts) == 1, [p.get_content_type() for p in msg.walk()]
    return parts[0]  # type: ignore[return-value]


def ics_bytes(msg: EmailMessage) -> bytes:
    payload = calendar_part(msg).get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def parsed(msg: EmailMessage) -> tuple[Calendar, Any]:
    cal = Calendar.from_ical(ics_bytes(msg))
    events = cal.walk("VEVENT")
    assert len(events) == 1
    return cal, events[0]


def notice(kind: Kind, policy: OfficePolicy, **kwargs: Any) -> Notice:
    n = plan(notices.event(kind, policy, recipient=WHO, **kwargs), policy)
    assert n is not None
    return n


# --------------------------------------------------------------------------- the part itself


@pytest.mark.parametrize(
    ("policy", "kind", "method"),
    [
        (KG, Kind.CONFIRMATION, "REQUEST"),
        (HW, Kind.NOTICE, "REQUEST"),
        (KG, Kind.CHANGE, "REQUEST"),
        (KG, Kind.CANCELLATION, "CANCEL"),
        (HW, Kind.CANCELLATION, "CANCEL"),
        (HW, Kind.NO_SHOW, "CANCEL"),
    ],
    ids=lambda v: getattr(v, "short_name", str(v)),
)
def test_the_calendar_part_is_text_calendar_with_its_method_inside_the_alternatives(
    policy: OfficePolicy, kind: Kind, method: str
) -> None:
    msg = received(notice(kind, policy, booking_id="bk-1"), policy)
    part = calendar_part(msg)
    assert part.get_content_type() == "text/calendar"
    assert part.get_param("method") == method
    assert str(part.get_param("charset")).upper() == "UTF-8"
    assert msg.get_content_type() == "multipart/alternative"  # text, HTML, calendar: one body
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html", "text/calendar"]
    raw = ics_bytes(msg)
    assert raw.startswith(b"BEGIN:VCALENDAR\r\n") and raw.endswith(b"END:VCALENDAR\r\n")  # CRLF (RFC 5545)
    assert b"\n" not in raw.replace(b"\r\n", b"")
    cal, _ = parsed(msg)
    assert str(cal["METHOD"]) == method
    assert str(cal["VERSION"]) == "2.0"


def test_every_field_of_a_kg_confirmation() -> None:
    n = notice(Kind.CONFIRMATION, KG, booking_id="bk-kg-1")
    cal, ev = parsed(received(n, KG))
    a = n.appointment
    assert a is not None
    assert str(ev["UID"]) == "bk-kg-1@kushiro-gyosei.consult"
    assert int(ev["SEQUENCE"]) == 1 == a.version
    assert str(ev["STATUS"]) == "CONFIRMED"
    # Asia/Tokyo, with its VTIMEZONE, and the instant the appointment names
    assert ev["DTSTART"].params["TZID"] == "Asia/Tokyo"
    assert ev["DTEND"].params["TZID"] == "Asia/Tokyo"
    assert ev.decoded("DTSTART") == datetime(2026, 11, 25, 10, 0, tzinfo=JST) == a.start
    assert ev.decoded("DTEND") == datetime(2026, 11, 25, 10, 30, tzinfo=JST) == a.end
    assert ev.decoded("DTSTART").utcoffset() == timedelta(hours=9)
    zones = cal.walk("VTIMEZONE")
    assert [str(z["TZID"]) for z in zones] == ["Asia/Tokyo"]
    assert zones[0].walk("STANDARD")[0].decoded("TZOFFSETTO") == timedelta(hours=9)
    # R16: the join URL, where a calendar offers to join
    assert str(ev["LOCATION"]) == a.meeting_url == str(ev["URL"])
    assert a.meeting_url.startswith(notices.join_url_base(KG))
    assert str(ev["ORGANIZER"]) == f"mailto:{SENDER}"
    assert ev["ORGANIZER"].params["CN"] == KG.name
    assert ev.decoded("DTSTAMP") == notices.NOW.astimezone(UTC)
    assert KG.service_name in str(ev["SUMMARY"])
    assert "2026年11月25日(水) 10:00〜10:30" in str(ev["DESCRIPTION"])


def test_r12_nothing_of_the_persons_contact_details_in_the_calendar_part() -> None:
    for kind, policy in [(Kind.CONFIRMATION, KG), (Kind.NOTICE, HW), (Kind.CANCELLATION, KG)]:
        raw = ics_bytes(received(notice(kind, policy), policy)).decode()
        unfolded = raw.replace("\r\n ", "")
        assert WHO.email not in unfolded
        assert "taro.yamada" not in unfolded
        assert PHONE not in unfolded
        assert WHO.name not in unfolded  # not even the name: a calendar is shared and kept long
        assert "ATTENDEE" not in unfolded  # the person is not named as an attendee either


# --------------------------------------------------------------------------- one entry across versions


def test_the_uid_is_stable_across_versions_and_the_sequence_rises() -> None:
    v1 = parsed(received(notice(Kind.CONFIRMATION, KG, booking_id="bk-move", version=1), KG))[1]
    v2 = parsed(received(notice(Kind.CHANGE, KG, booking_id="bk-move", version=1), KG))[1]  # moved: v2
    v3 = parsed(received(notice(Kind.CONFIRMATION, KG, booking_id="bk-move", version=3), KG))[1]
    cancel = parsed(received(notice(Kind.CANCELLATION, KG, booking_id="bk-move", version=3), KG))[1]
    assert len({str(e["UID"]) for e in (v1, v2, v3, cancel)}) == 1
    assert [int(e["SEQUENCE"]) for e in (v1, v2, v3)] == [1, 2, 3]
    assert int(cancel["SEQUENCE"]) >= int(v3["SEQUENCE"])  # a cancellation is never older than the entry
    assert v2.decoded("DTSTART") == datetime(2026, 11, 26, 10, 0, tzinfo=JST)  # the new time


def test_a_cancellation_cancels_the_entry() -> None:
    cal, ev = parsed(received(notice(Kind.CANCELLATION, HW, booking_id="bk-c"), HW))
    assert str(cal["METHOD"]) == "CANCEL"
    assert str(ev["STATUS"]) == "CANCELLED"
    assert str(ev["UID"]) == "bk-c@kohoku-hellowork.consult"
    assert int(ev["SEQUENCE"]) == 2  # one above version 1, the entry it cancels
    assert ev["DTSTART"].params["TZID"] == "Asia/Tokyo"


def test_no_calendar_part_where_no_appointment_exists() -> None:
    for kind, policy in [(Kind.RECOORDINATION, KG), (Kind.REFUSAL, HW), (Kind.TERMS, HW)]:
        msg = received(notice(kind, policy), policy)
        assert [p for p in msg.walk() if p.get_content_type() == "text/calendar"] == []
    before = notices.event(Kind.CANCELLATION, KG, recipient=WHO, appointment=None)
    n = plan(before, KG)
    assert n is not None
    assert [p for p in received(n, KG).walk() if p.get_content_type() == "text/calendar"] == []


def test_a_pre_issued_rooms_meeting_id_and_passcode_go_in_the_email_and_the_entry() -> None:
    appt = notices.appointment(HW, "bk-room", meeting_id="987 654 321", passcode="k7Q2")
    msg = received(notice(Kind.NOTICE, HW, booking_id="bk-room", appointment=appt), HW)
    text = msg.get_body(("plain",))
    assert text is not None
    assert "会議ID：987 654 321" in text.get_content()
    assert "パスコード：k7Q2" in text.get_content()
    description = str(parsed(msg)[1]["DESCRIPTION"])
    assert "987 654 321" in description and "k7Q2" in description


# --------------------------------------------------------------------------- the counsellor's entry


def test_the_counsellors_entry_has_its_own_uid_names_them_and_no_person() -> None:
    appt = notices.appointment(
        HW, "bk-cs", counsellor_id="hw-tanaka", counsellor_email="tanaka@hw.example.org"
    )
    event = notices.event(
        Kind.CONFIRMATION, HW, booking_id="bk-cs", appointment=appt, recipient=WHO, person=notices.brief(HW)
    )
    [n] = plan_all(event, HW)  # HW: no email to the person on confirmation (R06), one to the counsellor
    assert n.kind is Kind.COUNSELLOR_ASSIGNMENT
    msg = received(n, HW)
    cal, ev = parsed(msg)
    assert str(cal["METHOD"]) == "REQUEST"
    assert str(ev["UID"]) == "bk-cs.hw-tanaka@kohoku-hellowork.consult"
    assert int(ev["SEQUENCE"]) == 1
    assert str(ev["LOCATION"]) == appt.meeting_url == str(ev["URL"])
    assert ev["DTSTART"].params["TZID"] == "Asia/Tokyo"
    assert str(ev["ATTENDEE"]) == "mailto:tanaka@hw.example.org"
    unfolded = ics_bytes(msg).decode().replace("\r\n ", "")
    brief = notices.brief(HW)
    for personal in (WHO.email, WHO.name, PHONE, brief.topic, brief.jobseeker_number):
        assert personal is not None and personal not in unfolded
