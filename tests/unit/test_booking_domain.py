"""The life of a booking as plain Python: states, transitions, R04 R05 R06 R07 R08 R09 R13."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from services.booking.domain import (
    TRANSITIONS,
    Booking,
    IllegalTransition,
    InvalidFields,
    Person,
    RuleViolation,
    Status,
    Window,
)
from services.booking.refusals import PersonRecord
from shared.calendar import OfficeCalendar
from shared.clock import JST
from shared.commands import FieldError
from shared.events import Alternative, Appointment, BookingCompleted, Recipient
from shared.policy import Channel, load_file

OFFICES = Path(__file__).resolve().parents[2] / "deploy" / "offices"
KG = load_file(OFFICES / "kushiro-gyosei.yaml")
HW = load_file(OFFICES / "kohoku-hellowork.yaml")
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=JST)
TUE = date(2026, 11, 24)
GRACE = timedelta(minutes=10)


def at(day: date, h: int, m: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, tzinfo=JST)


def booking(office: str = "kushiro-gyosei") -> Booking:
    return Booking(
        booking_id="b1",
        office_id=office,
        portal_id="p",
        request_id="k",
        correlation_id="00000000-0000-0000-0000-000000000001",
        status=Status.REQUESTED,
        created_at=NOW,
        updated_at=NOW,
        windows=[Window(at(TUE, 10), at(TUE, 12))],
        duration_minutes=30,
        person=Person(name="釧路 太郎", phone="+81154221234", email="t@example.jp"),
        person_key="p_x",
        terms_version="2023-11-08",
        terms_agreed_at=NOW,
    )


def appt(day: date = TUE, hour: int = 10, version: int = 1) -> Appointment:
    return Appointment(
        counsellor_id="c",
        counsellor_name="委員",
        start=at(day, hour),
        end=at(day, hour, 30),
        meeting_url="https://teams.example/1",
        app="teams",
        version=version,
    )


def confirmed(office: str = "kushiro-gyosei") -> Booking:
    b = booking(office)
    cal = OfficeCalendar(KG if office == "kushiro-gyosei" else HW)
    b.confirm(appt(date(2026, 11, 26) if office != "kushiro-gyosei" else TUE), NOW, cal)
    return b


def test_terminal_states_have_no_way_out() -> None:
    for s in (Status.COMPLETED, Status.CANCELLED, Status.REJECTED, Status.DECLINED):
        assert TRANSITIONS[s] == frozenset()
    assert set(TRANSITIONS) == set(Status)


def test_r05_confirm_once_per_version_and_never_after_cancellation() -> None:
    b = booking()
    [event] = b.confirm(appt(), NOW, OfficeCalendar(KG))
    assert b.status == Status.CONFIRMED and event.TYPE == "booking.confirmed"
    assert event.recipient == Recipient(name="釧路 太郎", email="t@example.jp")  # type: ignore[attr-defined]
    assert b.confirm(appt(), NOW, OfficeCalendar(KG)) == []  # redelivered
    assert len(b.confirm(appt(hour=11, version=2), NOW, OfficeCalendar(KG))) == 1
    assert b.confirm(appt(version=1), NOW, OfficeCalendar(KG)) == []  # older, out of order
    assert b.appointment is not None and b.appointment.version == 2
    c = booking()
    c.cancel(channel=Channel.PHONE, by="person", recorded_by="s", staff=True, now=NOW, policy=KG)
    assert c.confirm(appt(), NOW, OfficeCalendar(KG)) == []


def test_r04_a_late_confirmation_rejects_the_booking_and_tells_the_person() -> None:
    b = booking("kohoku-hellowork")
    thursday = date(2026, 11, 26)
    [event] = b.confirm(appt(thursday), at(date(2026, 11, 25), 9), OfficeCalendar(HW))
    assert b.status == Status.REJECTED and b.rejection == {
        "rule": "R04",
        "message": "not confirmed by 2026-11-24",
    }
    assert event.TYPE == "booking.cancelled" and event.reason == "rejected"  # type: ignore[attr-defined]


def test_r04_in_principle_staff_may_confirm_later_for_a_recorded_reason() -> None:
    """HW 第6条(1): 原則相談日から2開庁日前までに予約を確定. The scheduler's staff API sets the reason."""
    thursday, wednesday = date(2026, 11, 26), at(date(2026, 11, 25), 9)
    late = appt(thursday).model_copy(update={"late_reason": "求職者から電話: 面接前の相談"})
    b = booking("kohoku-hellowork")
    [event] = b.confirm(late, wednesday, OfficeCalendar(HW))
    assert b.status == Status.CONFIRMED and event.TYPE == "booking.confirmed"
    assert b.history[-1].note.endswith("R04 exception past 2026-11-24: 求職者から電話: 面接前の相談")
    strict = HW.model_copy(update={"lead_time_exception": False})  # an office whose deadline is firm
    c = booking("kohoku-hellowork")
    [refused] = c.confirm(late, wednesday, OfficeCalendar(strict))
    assert c.status == Status.REJECTED and refused.reason == "rejected"  # type: ignore[attr-defined]


def test_r05_alternatives_accepted_declined_or_expired() -> None:
    options = [Alternative(option_id="o1", start=at(TUE, 14), end=at(TUE, 14, 30), counsellor_id="c")]
    hold = NOW + timedelta(days=2)
    b = booking()
    [proposed] = b.propose(options, hold, NOW)
    assert b.status == Status.RECOORDINATION_PROPOSED and proposed.TYPE == "booking.recoordination_proposed"
    with pytest.raises(RuleViolation, match="R05"):
        b.accept("o9", NOW, OfficeCalendar(KG))
    with pytest.raises(RuleViolation, match="no longer held"):
        b.accept("o1", hold, OfficeCalendar(KG))
    [accepted] = b.accept("o1", NOW, OfficeCalendar(KG))
    assert accepted.TYPE == "booking.alternative_accepted" and b.status == Status.ALTERNATIVE_ACCEPTED
    d = booking()
    d.propose(options, hold, NOW)
    declined, waiting = d.decline(NOW, KG)  # KG 第4条(2): 改めて日程調整させていただきます
    assert (declined.TYPE, waiting.TYPE) == ("booking.alternative_declined", "booking.awaiting_coordination")
    assert d.status == Status.AWAITING_COORDINATION and d.alternatives == []
    assert waiting.reason == "declined"  # type: ignore[attr-defined]
    e = booking()
    e.propose(options, hold, NOW)
    e.hold_expired(NOW, due_at=hold - timedelta(days=1))  # an earlier proposal's hold, arriving late
    assert e.status == Status.RECOORDINATION_PROPOSED and e.alternatives == options
    assert e.hold_expired(NOW, due_at=hold) == [] and e.status == Status.AWAITING_COORDINATION
    with pytest.raises(IllegalTransition):
        e.accept("o1", NOW, OfficeCalendar(KG))


def test_r06_notice_once_per_version_only_while_confirmed() -> None:
    b = confirmed()
    assert b.notice_due(0) == []
    assert [e.TYPE for e in b.notice_due(1)] == ["booking.notice_due"]
    assert b.notice_due(1) == []
    b.cancel(channel=Channel.PHONE, by="person", recorded_by="s", staff=True, now=NOW, policy=KG)
    assert b.notice_due(1) == []


def test_r07_kg_phone_or_email_by_staff_phone_only_on_the_day() -> None:
    b = confirmed()
    with pytest.raises(RuleViolation) as portal:
        b.cancel(channel=Channel.PORTAL, by="person", recorded_by="p", staff=False, now=NOW, policy=KG)
    assert portal.value.rule == "R07" and "0154-00-0000" in portal.value.details["how_to_cancel"]
    assert "kushiro-online@example.org" in portal.value.details["how_to_cancel"]
    with pytest.raises(RuleViolation, match="recorded by its staff"):
        b.cancel(channel=Channel.EMAIL, by="person", recorded_by="p", staff=False, now=NOW, policy=KG)
    with pytest.raises(RuleViolation, match="on the consultation day"):
        b.cancel(channel=Channel.EMAIL, by="person", recorded_by="s", staff=True, now=at(TUE, 8), policy=KG)
    [event] = b.cancel(
        channel=Channel.PHONE, by="person", recorded_by="s", staff=True, now=at(TUE, 8), policy=KG
    )
    assert (event.reason, event.channel) == ("person", "phone")  # type: ignore[attr-defined]
    with pytest.raises(IllegalTransition):
        b.cancel(channel=Channel.PHONE, by="person", recorded_by="s", staff=True, now=at(TUE, 8), policy=KG)


def test_r07_hw_phone_only_and_the_office_may_cancel() -> None:
    b = confirmed("kohoku-hellowork")
    with pytest.raises(RuleViolation, match="R07"):
        b.cancel(channel=Channel.EMAIL, by="person", recorded_by="s", staff=True, now=NOW, policy=HW)
    with pytest.raises(RuleViolation, match="only office staff"):
        b.cancel(channel=Channel.PORTAL, by="office", recorded_by="p", staff=False, now=NOW, policy=HW)
    [event] = b.cancel(channel=Channel.PHONE, by="office", recorded_by="s", staff=True, now=NOW, policy=HW)
    assert event.reason == "staff"  # type: ignore[attr-defined]


def test_r08_attendance_before_the_mark_stops_the_no_show() -> None:
    b = confirmed()
    with pytest.raises(RuleViolation, match="R08"):
        b.attend("contacted", at(TUE, 10, 11), at(TUE, 10, 12), "s", GRACE)
    assert b.attend("contacted", at(TUE, 10, 9), at(TUE, 10, 12), "s", GRACE)[0].TYPE == "booking.attended"
    assert b.no_show(1, at(TUE, 10, 10)) == []  # booking is the authority
    assert b.status == Status.ATTENDED
    [done] = b.complete(at(TUE, 10, 9), at(TUE, 10, 35), at(TUE, 10, 40))
    assert done.TYPE == "booking.completed" and b.status == Status.COMPLETED


def test_r10_the_completion_carries_the_attendance_for_the_usage_window() -> None:
    b = confirmed()
    b.attend("joined", at(TUE, 10, 2), at(TUE, 10, 3), "meeting", GRACE)
    with pytest.raises(RuleViolation, match="R10") as refused:  # ends before the person joined
        b.complete(at(TUE, 10, 0), at(TUE, 10, 1), at(TUE, 10, 40))
    assert refused.value.field == "ended_at"
    [done] = b.complete(at(TUE, 10, 4), at(TUE, 10, 30), at(TUE, 10, 40))
    assert isinstance(done, BookingCompleted)
    assert (done.attended_how, done.attended_at) == ("joined", at(TUE, 10, 2))
    assert (done.started_at, done.ended_at) == (at(TUE, 10, 4), at(TUE, 10, 30))


def test_r02_where_the_office_confirms_identity_a_session_completes_only_after_staff_did() -> None:
    """KG 第4条(1): 相談の際、御本人であることを確認させていただきます."""
    assert KG.identity_check and not HW.identity_check
    b = confirmed()
    with pytest.raises(IllegalTransition):  # not joined yet: nobody to check
        b.check_identity("photo_id", True, at(TUE, 10, 1), at(TUE, 10, 2), "s")
    b.attend("joined", at(TUE, 10, 2), at(TUE, 10, 2), "s", GRACE)
    with pytest.raises(RuleViolation, match="R02"):
        b.complete(at(TUE, 10, 2), at(TUE, 10, 30), at(TUE, 10, 31), identity_required=True)
    b.check_identity("name_and_contact", False, at(TUE, 10, 3), at(TUE, 10, 3), "s")  # could not, yet
    with pytest.raises(RuleViolation, match="R02") as refused:
        b.complete(at(TUE, 10, 2), at(TUE, 10, 30), at(TUE, 10, 31), identity_required=True)
    assert refused.value.field == "identity_check"
    with pytest.raises(RuleViolation, match="R02"):  # before the person joined
        b.check_identity("photo_id", True, at(TUE, 9, 50), at(TUE, 10, 4), "s")
    b.check_identity("photo_id", True, at(TUE, 10, 4), at(TUE, 10, 4), "staff-kg")
    assert b.identity_check is not None and b.identity_check.recorded_by == "staff-kg"
    assert [c.note for c in b.history[-2:]] == [
        "identity not confirmed (name_and_contact)",
        "identity confirmed (photo_id)",
    ]
    [done] = b.complete(at(TUE, 10, 2), at(TUE, 10, 30), at(TUE, 10, 31), identity_required=True)
    assert done.TYPE == "booking.completed"


def test_r08_no_show_cancels_unless_stale() -> None:
    b = confirmed()
    assert b.no_show(2, at(TUE, 10, 10)) == []  # a timer for another appointment version
    [event] = b.no_show(1, at(TUE, 10, 10))
    assert event.reason == "no_show" and b.was_no_show  # type: ignore[attr-defined]
    with pytest.raises(IllegalTransition):
        b.attend("joined", at(TUE, 10, 5), at(TUE, 10, 11), "s", GRACE)


def test_r05_left_to_staff_the_booking_waits_and_the_person_hears_so_where_the_office_says() -> None:
    b = booking()
    [told] = b.left_to_staff("no_free_counsellor", NOW, KG)
    assert told.TYPE == "booking.awaiting_coordination" and b.status == Status.AWAITING_COORDINATION
    assert b.left_to_staff("no_free_counsellor", NOW, KG) == []  # redelivered: told once
    quiet = KG.model_copy(
        update={"coordination": KG.coordination.model_copy(update={"tell_person_when_left_to_staff": False})}
    )
    c = booking()
    assert (
        c.left_to_staff("office_coordinates", NOW, quiet) == [] and c.status == Status.AWAITING_COORDINATION
    )
    d = confirmed()
    assert d.left_to_staff("no_free_counsellor", NOW, KG) == [] and d.status == Status.CONFIRMED  # too late
    assert len(c.confirm(appt(), NOW, OfficeCalendar(KG))) == 1  # staff confirm by hand


def test_r05_new_windows_after_a_decline_request_the_booking_again() -> None:
    """KG 第4条(2) 改めて日程調整: the person declined the proposed times and gives new wished windows;
    the booking is requested again with them (history and event), and the scheduler's answer moves it
    as it moves a new request."""
    options = [Alternative(option_id="1-1", start=at(TUE, 14), end=at(TUE, 14, 30), counsellor_id="c")]
    b = booking()
    b.propose(options, NOW + timedelta(days=2), NOW)
    b.decline(NOW, KG)
    new = [Window(at(date(2026, 11, 25), 13), at(date(2026, 11, 25), 15))]
    [changed] = b.change_windows(new, 20, NOW, "portal:p", [])
    assert changed.TYPE == "booking.windows_changed" and b.status == Status.REQUESTED
    assert changed.model_dump() == {
        "booking_id": "b1",
        "windows": [{"start": new[0].start, "end": new[0].end}],
        "duration_minutes": 20,
    }
    assert (b.windows, b.duration_minutes) == (new, 20)
    assert b.history[-1].note == "new wished windows from portal:p: 2026年11月25日(水) 13:00〜15:00 (20 min)"
    assert b.change_windows(new, 20, NOW, "portal:p", []) == []  # the same again (a retry): no change
    [told] = b.left_to_staff("office_coordinates", NOW, KG)  # nothing in them either: staff, and told
    assert told.TYPE == "booking.awaiting_coordination" and b.status == Status.AWAITING_COORDINATION
    assert len(b.confirm(appt(date(2026, 11, 25), 13), NOW, OfficeCalendar(KG))) == 1


def test_r05_new_windows_only_while_the_office_coordinates_again_and_only_valid_ones() -> None:
    new = [Window(at(TUE, 13), at(TUE, 15))]
    for b in (booking(), confirmed()):  # coordination under way, or a time fixed: nothing to re-wish
        with pytest.raises(IllegalTransition, match=f"{b.status.value} cannot be given new windows"):
            b.change_windows(new, 30, NOW, "portal:p", [])
    waiting = booking()
    waiting.left_to_staff("no_free_counsellor", NOW, KG)
    bad = [FieldError(field="windows.0", message="2026-11-29 is not an open day (日曜日)", rule="R02")]
    with pytest.raises(InvalidFields, match=r"windows.0: .*\(日曜日\) \(R02\)") as refused:
        waiting.change_windows(new, 30, NOW, "portal:p", bad)
    assert refused.value.errors == bad and waiting.status == Status.AWAITING_COORDINATION
    assert TRANSITIONS[Status.AWAITING_COORDINATION] >= {Status.REQUESTED}


def test_an_illegal_transition_raises() -> None:
    with pytest.raises(IllegalTransition, match="requested cannot be completed"):
        booking().complete(NOW, NOW, NOW)
    with pytest.raises(IllegalTransition):
        booking().decline(NOW, KG)


def test_r09_two_no_shows_in_a_year_refuse_for_180_days() -> None:
    p = PersonRecord("p_x", "kushiro-gyosei")
    recipient = Recipient(name="n", email="e@x.jp")
    assert p.record_no_show("b1", NOW, KG, recipient) == []
    assert p.record_no_show("b1", NOW, KG, recipient) == []  # the same no-show again
    [refused] = p.record_no_show("b2", NOW + timedelta(days=30), KG, recipient)
    assert refused.rule == "R09" and refused.until == NOW + timedelta(days=210)  # type: ignore[attr-defined]
    assert p.refusal_in_force(NOW + timedelta(days=209)) is not None
    assert p.refusal_in_force(NOW + timedelta(days=210)) is None
    # after the refusal, the no-shows that caused it are not counted again
    assert p.record_no_show("b3", NOW + timedelta(days=220), KG, recipient) == []


def test_r09_where_staff_decide_the_threshold_puts_the_person_on_review_not_refused() -> None:
    """Both terms: お断りする場合があります (may refuse). With `decide: staff` the office decides."""
    policy = KG.model_copy(update={"refusal": KG.refusal.model_copy(update={"decide": "staff"})})
    p, recipient = PersonRecord("p_x", "kushiro-gyosei"), Recipient(name="n", email="e@x.jp")
    assert p.record_no_show("b1", NOW, policy, recipient) == []
    assert p.record_no_show("b2", NOW + timedelta(days=1), policy, recipient) == []  # no refusal
    assert p.refusal is None and p.review is not None
    assert (p.review.no_shows, p.review.last_booking_id) == (2, "b2")
    assert p.decide_review(False, None, "staff-1", NOW + timedelta(days=2), recipient) == []  # dismissed
    assert p.review is None and p.counted(NOW + timedelta(days=2), policy) == []  # not counted again
    assert p.record_no_show("b3", NOW + timedelta(days=3), policy, recipient) == []
    p.record_no_show("b4", NOW + timedelta(days=4), policy, recipient)
    later = NOW + timedelta(days=5)
    [refused] = p.decide_review(True, later + timedelta(days=90), "staff-2", later, recipient)
    assert (refused.rule, refused.until) == ("R09", later + timedelta(days=90))  # type: ignore[attr-defined]
    assert p.refusal is not None and p.refusal.by == "staff-2" and p.review is None
    assert p.decide_review(True, None, "staff-3", later, recipient) == []  # decided already


def test_r13_a_misconduct_refusal_names_the_ground_of_the_terms() -> None:
    p = PersonRecord("p_x", "kushiro-gyosei")
    [refused] = p.refuse("暴言", "職員を罵倒", until=None, by="s", now=NOW, recipient=None)
    assert refused.reason == "暴言（職員を罵倒）"  # type: ignore[attr-defined]
    assert p.refusal is not None and p.refusal.ground == "暴言"


def test_r09_no_shows_further_apart_than_the_period_do_not_add_up() -> None:
    p = PersonRecord("p_x", "kushiro-gyosei")
    p.record_no_show("b1", NOW, KG, None)
    assert p.record_no_show("b2", NOW + timedelta(days=366), KG, None) == []


def test_r13_staff_refuse_until_lifted_and_a_lift_resets_the_count() -> None:
    p = PersonRecord("p_x", "kohoku-hellowork")
    [refused] = p.refuse("脅迫、暴言、威圧的な言動", None, until=None, by="staff-1", now=NOW, recipient=None)
    assert (refused.rule, refused.until) == ("R13", None)  # type: ignore[attr-defined]
    assert p.refusal_in_force(NOW + timedelta(days=3650)) is not None
    [lifted] = p.lift("staff-2", NOW + timedelta(days=1))
    assert lifted.TYPE == "person.refusal_lifted" and p.refusal is None
    assert p.lift("staff-2", NOW + timedelta(days=1)) == []
    b = confirmed("kohoku-hellowork")
    assert [e.reason for e in b.refuse(NOW, "s")] == ["refused"]  # type: ignore[attr-defined]
