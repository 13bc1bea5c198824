"""The life of a booking against real RabbitMQ and FerretDB: the scheduler's events are published as
the scheduler publishes them; the clock is fixed (Sunday 2026-11-22 10:00 JST) and moved by hand."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from examples import forms
from services.booking.domain import Booking
from services.booking.service import BookingService
from services.booking.store import Stores
from shared import topology
from shared.clock import JST
from shared.events import Alternative as Option
from shared.events import (
    AlternativeDeclined,
    AlternativesHeld,
    Appointment,
    HoldExpired,
    LeftToStaff,
    NoShow,
    NoticeTimerFired,
    Payload,
    SlotAssigned,
    new_event,
)
from tests.support import eventually
from tests.support.booking import HW, KG, NOW, STAFF_KEY, Harness, announce_terms, running

TUE, THU = date(2026, 11, 24), date(2026, 11, 26)


@pytest.fixture
async def h(make_settings: Callable[..., Any], amqp_url: str) -> AsyncIterator[Harness]:
    async with running(make_settings, amqp_url) as harness:
        yield harness


def service_of(h: Harness) -> BookingService:
    return h.client._transport.app.state.service  # type: ignore[attr-defined,no-any-return]


def appointment(day: date, hhmm: str = "10:00", version: int = 1) -> Appointment:
    start = datetime.combine(day, datetime.strptime(hhmm, "%H:%M").time(), JST)
    return Appointment(
        counsellor_id="c-1",
        counsellor_name="行政 相談委員",
        start=start,
        end=start + timedelta(minutes=30),
        meeting_url=f"https://teams.microsoft.com/l/meetup-join/x/{version}",
        app="teams",
        version=version,
    )


async def scheduler_says(h: Harness, payload: Payload, office: str = KG, times: int = 1) -> None:
    """Publish an event as the scheduler does (a redelivery is the same event again)."""
    event = new_event(payload, office_id=office, producer="scheduler", clock=h.clock)
    for _ in range(times):
        await h.publish(event.model_dump(mode="json"), event.type, topology.EVENTS)


async def kg_booking(h: Harness, day: date = TUE, **fields: Any) -> str:
    r = await h.book(KG, forms.kg_form(h.policy(KG), day, h.now, **fields))
    assert r.status_code == 202, r.text
    return str(r.json()["booking_id"])


async def confirmed(
    h: Harness, booking_id: str, office: str = KG, day: date = TUE, hhmm: str = "10:00"
) -> None:
    await scheduler_says(h, SlotAssigned(booking_id=booking_id, appointment=appointment(day, hhmm)), office)
    await h.status_becomes(booking_id, "confirmed")


async def hw_booking(h: Harness, number: str = "12345-00000011", email: str = "mp@mypage.example.jp") -> str:
    msg = forms.jobseeker_message(HW, number, "090-1111-0000", email, sent_at=h.now)
    await h.publish(msg, msg["type"])
    service = service_of(h)
    await eventually(lambda: service.stores.jobseekers.get(HW, number), what="registered")
    body = forms.hw_form(h.policy(HW), THU, h.now, jobseeker_number=number, phone="090-1111-0000")
    r = await h.book(HW, body)
    assert r.status_code == 202, r.text
    return str(r.json()["booking_id"])


# ----------------------------------------------------------------------------- coordination


async def test_r05_confirmation_gives_the_meeting_url_and_the_recipient_once_per_version(h: Harness) -> None:
    booking_id = await kg_booking(h)
    assert (await h.get(booking_id))["appointment"] is None
    await confirmed(h, booking_id)
    [event] = await h.events.wait("booking.confirmed", booking_id=booking_id)
    assert event["payload"]["recipient"]["name"] == "釧路 太郎"
    assert event["payload"]["terms_version"] == "2023-11-08"
    view = await h.get(booking_id)
    assert view["appointment"]["meeting_url"].endswith("/1")
    assert view["appointment"]["when"] == "2026年11月24日(火) 10:00〜10:30"
    # the same version again (redelivery or a retried scheduler) changes nothing; a newer one does
    await scheduler_says(h, SlotAssigned(booking_id=booking_id, appointment=appointment(TUE)), times=2)
    await scheduler_says(h, SlotAssigned(booking_id=booking_id, appointment=appointment(TUE, "11:00", 2)))
    await h.events.wait("booking.confirmed", n=2, booking_id=booking_id)
    await h.quiet()
    assert len(h.events.of("booking.confirmed", booking_id=booking_id)) == 2
    assert (await h.get(booking_id))["appointment"]["version"] == 2


async def test_r05_recoordination_accepted_declined_or_left_to_expire(h: Harness) -> None:
    start = datetime(2026, 11, 25, 14, 0, tzinfo=JST)
    options = [
        Option(
            option_id=f"o{i}",
            start=start + timedelta(hours=i),
            end=start + timedelta(hours=i, minutes=30),
            counsellor_id="c-2",
        )
        for i in range(3)
    ]
    hold = NOW + timedelta(days=2)
    accepted, declined, lapsed = [await kg_booking(h) for _ in range(3)]
    for b in (accepted, declined, lapsed):
        await scheduler_says(h, AlternativesHeld(booking_id=b, alternatives=options, hold_expires_at=hold))
        await h.status_becomes(b, "recoordination_proposed")
    [proposal] = await h.events.wait("booking.recoordination_proposed", booking_id=accepted)
    assert proposal["payload"]["recipient"]["name"] == "釧路 太郎"
    assert [a["option_id"] for a in (await h.get(accepted))["alternatives"]] == ["o0", "o1", "o2"]

    r = await h.portal("POST", f"/v1/bookings/{accepted}/alternatives/o1/acceptance")
    assert r.status_code == 200, r.text
    await h.events.wait("booking.alternative_accepted", booking_id=accepted, option_id="o1")
    await confirmed(h, accepted, day=date(2026, 11, 25), hhmm="15:00")

    r = await h.portal("POST", f"/v1/bookings/{declined}/alternatives/decline")
    assert r.json()["status"] == "awaiting_coordination"  # KG 第4条(2): coordinated again
    await h.events.wait("booking.alternative_declined", booking_id=declined)
    [again] = await h.events.wait("booking.awaiting_coordination", booking_id=declined)
    assert again["payload"]["reason"] == "declined" and again["payload"]["recipient"]["name"] == "釧路 太郎"
    await scheduler_says(
        h, AlternativesHeld(booking_id=declined, alternatives=options[:1], hold_expires_at=hold)
    )
    await h.status_becomes(declined, "recoordination_proposed")  # staff proposed another time

    await scheduler_says(h, HoldExpired(booking_id=lapsed))
    await h.status_becomes(lapsed, "awaiting_coordination")
    r = await h.portal("POST", f"/v1/bookings/{lapsed}/alternatives/o0/acceptance")
    assert (r.status_code, r.json()["error"]) == (409, "illegal-transition")


async def test_r05_nothing_to_offer_the_booking_waits_for_staff_and_the_person_is_told(h: Harness) -> None:
    waiting = await kg_booking(h)
    await scheduler_says(h, LeftToStaff(booking_id=waiting, reason="no_free_counsellor"), times=2)
    view = await h.status_becomes(waiting, "awaiting_coordination")
    assert view["alternatives"] == []
    [told] = await h.events.wait("booking.awaiting_coordination", booking_id=waiting)
    assert told["payload"]["reason"] == "no_free_counsellor"
    await h.quiet()
    assert h.events.of("booking.recoordination_proposed", booking_id=waiting) == []  # never without times
    assert len(h.events.of("booking.awaiting_coordination", booking_id=waiting)) == 1  # told once
    await confirmed(h, waiting)  # staff confirm by hand
    assert (await h.get(waiting))["status"] == "confirmed"


async def test_r04_a_confirmation_after_the_hw_deadline_rejects_the_booking(h: Harness) -> None:
    booking_id = await hw_booking(h)
    h.clock.set(datetime(2026, 11, 25, 9, 0, tzinfo=JST))  # Thursday's deadline was Tuesday
    await scheduler_says(h, SlotAssigned(booking_id=booking_id, appointment=appointment(THU)), HW)
    view = await h.status_becomes(booking_id, "rejected")
    assert view["rejection"]["rule"] == "R04"
    [cancelled] = await h.events.wait("booking.cancelled", booking_id=booking_id)
    assert cancelled["payload"]["reason"] == "rejected"
    assert view["appointment"] is None  # no meeting URL for a booking that will not take place


# ----------------------------------------------------------------------------- notice (R06)


async def test_r06_hw_notice_goes_to_the_current_my_page_address_once_per_version(h: Harness) -> None:
    booking_id = await hw_booking(h, "12345-00000012", "old@mypage.example.jp")
    await confirmed(h, booking_id, HW, THU, "13:00")
    moved = forms.jobseeker_message(
        HW,
        "12345-00000012",
        "090-1111-0000",
        "new@mypage.example.jp",
        sent_at=h.now + timedelta(hours=1),
        kind="jobseeker.updated",
    )
    await h.publish(moved, moved["type"])
    service = service_of(h)

    async def moved_in() -> bool:
        js = await service.stores.jobseekers.get(HW, "12345-00000012")
        return js is not None and js.mypage_email == "new@mypage.example.jp"

    await eventually(moved_in, what="My Page address updated")
    due = datetime(2026, 11, 25, 10, 0, tzinfo=JST)
    stale = NoticeTimerFired(booking_id=booking_id, appointment_version=0, due_at=due)
    await scheduler_says(h, stale, HW)
    await scheduler_says(h, NoticeTimerFired(booking_id=booking_id, appointment_version=1, due_at=due), HW)
    await scheduler_says(h, NoticeTimerFired(booking_id=booking_id, appointment_version=1, due_at=due), HW)
    [notice] = await h.events.wait("booking.notice_due", booking_id=booking_id)
    assert notice["payload"]["recipient"] == {"name": "港北 花子", "email": "new@mypage.example.jp"}
    await h.quiet()
    assert len(h.events.of("booking.notice_due", booking_id=booking_id)) == 1


# ----------------------------------------------------------------------------- cancellation (R07)


async def test_r07_kg_cancels_by_phone_or_email_and_on_the_day_by_phone_only(h: Harness) -> None:
    by_email, on_the_day = await kg_booking(h), await kg_booking(h)
    for b in (by_email, on_the_day):
        await confirmed(h, b)
    r = await h.portal("POST", f"/v1/bookings/{by_email}/cancellations", json={"channel": "portal"})
    assert (r.status_code, r.json()["rule"]) == (409, "R07")
    assert "0154-00-0000" in r.json()["how_to_cancel"]
    r = await h.portal("POST", f"/v1/bookings/{by_email}/cancellations", json={"channel": "phone"})
    assert "recorded by its staff" in r.json()["message"]  # a portal cannot claim a phone call
    r = await h.staff(
        "POST", f"/v1/bookings/{by_email}/cancellations", json={"channel": "email", "recorded_by": "佐藤"}
    )
    assert r.json()["status"] == "cancelled"
    [event] = await h.events.wait("booking.cancelled", booking_id=by_email)
    assert (event["payload"]["reason"], event["payload"]["channel"], event["payload"]["recorded_by"]) == (
        "person",
        "email",
        "佐藤",
    )

    h.clock.set(datetime(2026, 11, 24, 8, 30, tzinfo=JST))  # the consultation day
    r = await h.staff("POST", f"/v1/bookings/{on_the_day}/cancellations", json={"channel": "email"})
    assert (r.status_code, r.json()["rule"]) == (409, "R07")
    assert "当日のキャンセルは電話のみ" in r.json()["how_to_cancel"]
    r = await h.staff("POST", f"/v1/bookings/{on_the_day}/cancellations", json={"channel": "phone"})
    assert r.status_code == 200 and r.json()["cancellation"]["channel"] == "phone"
    again = await h.staff("POST", f"/v1/bookings/{on_the_day}/cancellations", json={"channel": "phone"})
    assert (again.status_code, again.json()["error"]) == (409, "illegal-transition")


async def test_r07_hw_cancels_by_phone_only(h: Harness) -> None:
    booking_id = await hw_booking(h, "12345-00000013")
    r = await h.staff("POST", f"/v1/bookings/{booking_id}/cancellations", json={"channel": "email"})
    assert (r.status_code, r.json()["rule"]) == (409, "R07")
    assert "045-000-0000" in r.json()["how_to_cancel"]
    r = await h.staff("POST", f"/v1/bookings/{booking_id}/cancellations", json={"channel": "phone"})
    assert r.json()["status"] == "cancelled"


# ----------------------------------------------------------------------------- the session (R08)


async def test_r08_joining_or_contacting_in_time_stops_the_no_show(h: Harness) -> None:
    joined, contacted_late = await kg_booking(h), await kg_booking(h)
    for b in (joined, contacted_late):
        await confirmed(h, b)
    h.clock.set(datetime(2026, 11, 24, 10, 12, tzinfo=JST))
    r = await h.staff(
        "POST", f"/v1/bookings/{joined}/attendance", json={"how": "joined", "at": "2026-11-24T10:04:00+09:00"}
    )
    assert r.json()["status"] == "attended", r.text
    await h.events.wait("booking.attended", booking_id=joined, how="joined")
    r = await h.staff("POST", f"/v1/bookings/{contacted_late}/attendance", json={"how": "contacted"})
    assert (r.status_code, r.json()["rule"]) == (409, "R08")  # 10:12 is past the 10-minute mark

    start = datetime(2026, 11, 24, 10, 0, tzinfo=JST)
    await scheduler_says(h, NoShow(booking_id=joined, appointment_version=1, start=start, grace_minutes=10))
    await scheduler_says(
        h, NoShow(booking_id=contacted_late, appointment_version=1, start=start, grace_minutes=10)
    )
    [no_show] = await h.events.wait("booking.cancelled", booking_id=contacted_late)
    assert no_show["payload"]["reason"] == "no_show"
    assert (await h.get(joined, STAFF_KEY))["status"] == "attended"  # booking is the authority

    h.clock.set(datetime(2026, 11, 24, 10, 40, tzinfo=JST))
    usage = {"started_at": "2026-11-24T10:04:00+09:00", "ended_at": "2026-11-24T10:31:00+09:00"}
    r = await h.staff("POST", f"/v1/bookings/{joined}/completion", json=usage)
    assert (r.status_code, r.json()["rule"], r.json()["field"]) == (409, "R02", "identity_check")  # KG 4(1)
    check = {"method": "name_and_contact", "at": "2026-11-24T10:05:00+09:00"}
    r = await h.staff("POST", f"/v1/bookings/{joined}/identity-check", json=check)
    assert r.json()["identity_check"]["confirmed"] is True, r.text
    r = await h.staff("POST", f"/v1/bookings/{joined}/completion", json=usage)
    assert r.json()["status"] == "completed"
    [done] = await h.events.wait("booking.completed", booking_id=joined)
    assert done["payload"]["ended_at"] == "2026-11-24T01:31:00Z"


async def test_an_illegal_transition_answers_409(h: Harness) -> None:
    booking_id = await kg_booking(h)
    r = await h.staff(
        "POST",
        f"/v1/bookings/{booking_id}/completion",
        json={"started_at": "2026-11-22T10:00:00+09:00", "ended_at": "2026-11-22T10:10:00+09:00"},
    )
    assert (r.status_code, r.json()["error"], r.json()["status"]) == (409, "illegal-transition", "requested")
    r = await h.staff("POST", f"/v1/bookings/{booking_id}/attendance", json={"how": "joined"})
    assert r.status_code == 409


# ----------------------------------------------------------------------------- refusals (R09, R13)


async def test_r09_no_shows_refuse_the_person_until_lifted(h: Harness) -> None:
    person = {"phone": "0154-33-4444", "email": "same.person@example.jp"}
    first, second = await kg_booking(h, **person), await kg_booking(h, **person)
    start = datetime(2026, 11, 24, 10, 0, tzinfo=JST)
    for b in (first, second):
        await confirmed(h, b)
    await scheduler_says(
        h, NoShow(booking_id=first, appointment_version=1, start=start, grace_minutes=10), times=3
    )
    await h.status_becomes(first, "cancelled")
    await h.quiet()
    assert h.events.of("person.refused") == []  # one no-show, however often delivered, is one
    await scheduler_says(h, NoShow(booking_id=second, appointment_version=1, start=start, grace_minutes=10))
    [refused] = await h.events.wait("person.refused")
    assert refused["payload"]["rule"] == "R09"
    assert refused["payload"]["recipient"]["email"] == "same.person@example.jp"
    assert refused["payload"]["until"].startswith("2027-05-2")  # 180 days (office policy)
    assert "0154" not in refused["payload"]["person_key"]

    # the same person, written differently, is still the same person
    r = await h.book(
        KG,
        forms.kg_form(
            h.policy(KG), TUE, h.now, phone="０１５４－３３－４４４４", email="same.person@example.jp"
        ),
    )
    assert (r.status_code, r.json()["rule"]) == (409, "R09")
    [listed] = (await h.staff("GET", f"/v1/offices/{KG}/refusals")).json()
    assert listed["rule"] == "R09" and listed["no_shows"] == 2
    r = await h.staff("DELETE", f"/v1/offices/{KG}/refusals/{listed['person_key']}")
    assert r.json()["lifted"] is True
    await h.events.wait("person.refusal_lifted")
    assert (await h.book(KG, forms.kg_form(h.policy(KG), TUE, h.now, **person))).status_code == 202


async def test_r09_where_the_office_decides_staff_refuse_or_dismiss_from_the_review_list(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """お断りする場合があります: with `refusal.decide: staff` the threshold only puts the person on the
    office's review list; nothing is sent until staff refuse (the refusal mail then goes out)."""
    kg = h.policy(KG)
    staff_decide = kg.model_copy(update={"refusal": kg.refusal.model_copy(update={"decide": "staff"})})
    monkeypatch.setitem(service_of(h).policies._by_id, KG, staff_decide)
    person = {"phone": "0154-33-5555", "email": "review.person@example.jp"}
    start = datetime(2026, 11, 24, 10, 0, tzinfo=JST)
    missed = [await kg_booking(h, **person) for _ in range(4)]
    for b in missed:
        await confirmed(h, b)
    for b in missed[:2]:
        await scheduler_says(h, NoShow(booking_id=b, appointment_version=1, start=start, grace_minutes=10))
        await h.status_becomes(b, "cancelled")

    async def listed() -> list[dict[str, Any]]:
        return list((await h.staff("GET", f"/v1/offices/{KG}/refusal-reviews")).json())

    [review] = await eventually(listed, what="the person on the review list")
    assert (review["no_shows"], review["last_booking_id"]) == (2, missed[1])
    await h.quiet()
    assert h.events.of("person.refused") == []  # the office has not decided yet
    assert (await h.book(KG, forms.kg_form(kg, TUE, h.now, **person))).status_code == 202  # may book
    url = f"/v1/offices/{KG}/refusal-reviews/{review['person_key']}"
    r = await h.staff("POST", url, json={"decision": "dismiss"})
    assert r.json()["under_review"] is False and r.json()["refusal"] is None, r.text
    assert await listed() == []

    h.clock.set(h.now + timedelta(hours=1))  # later no-shows count from the dismissal on
    for b in missed[2:]:  # two more: on the list again, and this time staff refuse
        await scheduler_says(h, NoShow(booking_id=b, appointment_version=1, start=start, grace_minutes=10))
        await h.status_becomes(b, "cancelled")
    [again] = await eventually(listed, what="the person on the review list again")
    r = await h.staff("POST", url, json={"decision": "refuse"})
    assert again["person_key"] == review["person_key"] and again["no_shows"] == 2  # dismissed ones not again
    assert r.json()["refusal"]["rule"] == "R09" and r.json()["refusal"]["by"] != "system", r.text
    [refused] = await h.events.wait("person.refused")
    assert refused["payload"]["recipient"]["email"] == "review.person@example.jp"
    assert refused["payload"]["until"].startswith("2027-05-2")  # the office's refuse_for from now
    r = await h.book(KG, forms.kg_form(kg, TUE, h.now, **person))
    assert (r.status_code, r.json()["rule"]) == (409, "R09")
    r = await h.staff("POST", url, json={"decision": "dismiss"})
    assert r.status_code == 404  # decided: no longer under review


async def test_r17_people_booked_on_or_after_an_announced_terms_change_are_told_once(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HW 第14条: 変更する旨及び変更後の本規約の内容並びにその効力発生時期を利用者に告知します."""
    announce_terms(
        h, monkeypatch, HW, "2026-11-27", announced_on=date(2026, 11, 20), summary="第6条(1)の確定期限の改定"
    )
    before, after = await hw_booking(h, "12345-00000021"), await hw_booking(h, "12345-00000022")
    await confirmed(h, before, HW, THU, "13:00")  # Thursday 26th: the terms in force still apply
    await confirmed(h, after, HW, date(2026, 11, 30), "13:00")  # Monday 30th: after the change
    service = service_of(h)
    assert await service.announce_terms() == 1
    [told] = await h.events.wait("booking.terms_change_announced", booking_id=after)
    assert (told["payload"]["version"], told["payload"]["effective_from"]) == ("2026-11-27", "2026-11-27")
    assert h.events.of("booking.terms_change_announced", booking_id=before) == []
    assert told["payload"]["terms_version"] == "2023-11-01"  # what the person agreed to
    assert await service.announce_terms() == 0  # once per booking and version
    assert (await h.get(after, STAFF_KEY))["status"] == "confirmed"


async def test_r13_staff_refuse_a_person_for_misconduct(h: Harness) -> None:
    booking_id = await hw_booking(h, "12345-00000014")
    await confirmed(h, booking_id, HW, THU, "13:00")
    r = await h.staff("POST", f"/v1/bookings/{booking_id}/refusal", json={"ground": "暴言", "detail": "x"})
    assert (r.status_code, r.json()["rule"], r.json()["field"]) == (409, "R13", "ground")  # not HW's wording
    ground = "脅迫、暴言、威圧的な言動"  # HW 第12条(1), as the office's terms list it
    refusal = {"ground": ground, "detail": "相談員に対し大声で威圧した"}
    r = await h.staff("POST", f"/v1/bookings/{booking_id}/refusal", json=refusal)
    assert r.json()["status"] == "cancelled"
    assert r.json()["cancellation"]["reason"] == "refused"
    [refused] = await h.events.wait("person.refused")
    assert (refused["payload"]["rule"], refused["payload"]["until"]) == ("R13", None)
    assert refused["payload"]["reason"] == f"{ground}（相談員に対し大声で威圧した）"
    [listed] = (await h.staff("GET", f"/v1/offices/{HW}/refusals")).json()
    assert (listed["rule"], listed["ground"]) == ("R13", ground)
    body = forms.hw_form(h.policy(HW), THU, h.now, jobseeker_number="12345-00000014", phone="090-1111-0000")
    r = await h.book(HW, body)
    assert (r.status_code, r.json()["rule"]) == (409, "R13")


# ----------------------------------------------------------------------------- concurrency


async def test_concurrent_changes_from_two_processes_lose_nothing(h: Harness) -> None:
    """Two service instances (no shared lock) change one booking 20 times at once: every change lands."""
    booking_id = await kg_booking(h)
    mine = service_of(h)
    other = BookingService(mine.producer, Stores.open(h.runtime.db, h.settings.vault()), mine.policies)

    def mark(n: int) -> Callable[[Booking], list[Payload]]:
        def act(b: Booking) -> list[Payload]:
            b.notices_sent.append(n)  # any state change will do: each one must survive
            return [AlternativeDeclined(booking_id=b.booking_id)]

        return act

    await asyncio.gather(*(random.choice((mine, other)).change(booking_id, mark(n)) for n in range(20)))
    booking = await mine.get(booking_id)
    assert sorted(booking.notices_sent) == list(range(20))
    assert booking.version == 21
    await h.events.wait("booking.alternative_declined", n=20, booking_id=booking_id)
