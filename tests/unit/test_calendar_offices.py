"""The office calendar (open days, R04 deadline, R06 notice date) on the real KG and HW policies."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.calendar import OfficeCalendar, jst_date
from shared.clock import JST
from shared.policy import OfficePolicy, load_file

OFFICES = Path(__file__).resolve().parents[2] / "deploy" / "offices"
HW = OfficeCalendar(load_file(OFFICES / "kohoku-hellowork.yaml"))
KG = OfficeCalendar(load_file(OFFICES / "kushiro-gyosei.yaml"))
D = date


def test_r04_hw_lead_time_skips_holidays() -> None:
    # Wed 25 Nov 2026: the two open days before are Tue 24 and Fri 20 (Mon 23 勤労感謝の日, weekend)
    assert HW.confirmation_deadline(D(2026, 11, 25)) == D(2026, 11, 20)
    assert HW.confirmation_deadline(D(2026, 11, 26)) == D(2026, 11, 24)
    assert not HW.can_confirm_on(D(2026, 11, 25), today=D(2026, 11, 22))
    assert HW.can_confirm_on(D(2026, 11, 26), today=D(2026, 11, 24))
    assert not HW.can_confirm_on(D(2026, 11, 26), today=D(2026, 11, 25))


def test_r04_kg_has_no_lead_time() -> None:
    assert KG.confirmation_deadline(D(2026, 11, 24)) is None
    assert KG.can_confirm_on(D(2026, 11, 24), today=D(2026, 11, 24))


def test_national_substitute_and_citizens_holidays_are_closed() -> None:
    assert HW.closed_because(D(2026, 11, 23)) == "勤労感謝の日"
    assert HW.closed_because(D(2026, 5, 6)) == "振替休日"  # 憲法記念日 fell on a Sunday
    assert HW.closed_because(D(2027, 3, 22)) == "振替休日"  # 春分の日 on a Sunday
    assert HW.closed_because(D(2026, 9, 22)) == "国民の休日"  # between 敬老の日 and 秋分の日
    assert HW.closed_because(D(2026, 11, 28)) == "土曜日"
    assert HW.closed_because(D(2026, 11, 29)) == "日曜日"
    assert HW.is_open(D(2026, 11, 24))


def test_year_end_closure_and_the_first_open_day_after_it() -> None:
    for day in (
        D(2026, 12, 29),
        D(2026, 12, 30),
        D(2026, 12, 31),
        D(2027, 1, 1),
        D(2027, 1, 2),
        D(2027, 1, 3),
    ):
        assert not HW.is_open(day), day
    assert HW.closed_because(D(2026, 12, 30)) == "年末年始"
    assert HW.is_open(D(2026, 12, 28)) and HW.is_open(D(2027, 1, 4))
    # Monday 4 Jan 2027: notice on the last open day of the year, deadline two open days before
    assert HW.notice_date(D(2027, 1, 4)) == D(2026, 12, 28)
    assert HW.confirmation_deadline(D(2027, 1, 4)) == D(2026, 12, 25)


def test_golden_week() -> None:
    # 2027: 昭和の日 Thu 29 Apr; 憲法記念日, みどりの日, こどもの日 Mon 3 – Wed 5 May
    assert [HW.is_open(D(2027, 5, d)) for d in range(1, 7)] == [False, False, False, False, False, True]
    assert HW.notice_date(D(2027, 5, 6)) == D(2027, 4, 30)
    assert HW.confirmation_deadline(D(2027, 5, 6)) == D(2027, 4, 28)


def test_r06_a_monday_consultations_notice_goes_out_on_friday() -> None:
    assert HW.notice_date(D(2026, 11, 30)) == D(2026, 11, 27)
    assert HW.notice_date(D(2026, 11, 26)) == D(2026, 11, 25)  # the day before when it is open
    assert HW.notice_date(D(2026, 11, 24)) == D(2026, 11, 20)  # Mon 23 holiday, weekend: Friday
    assert HW.notice_at(D(2026, 11, 30)) == datetime(2026, 11, 27, 10, 0, tzinfo=JST)


def test_r06_kg_sends_no_day_before_notice() -> None:
    assert KG.notice_date(D(2026, 11, 30)) is None
    assert KG.notice_at(D(2026, 11, 30)) is None


def test_extra_closed_days_are_policy_data() -> None:
    policy: OfficePolicy = HW.policy.model_copy(update={"extra_closed_days": [D(2026, 11, 24)]})
    cal = OfficeCalendar(policy)
    assert cal.closed_because(D(2026, 11, 24)) == "臨時閉庁日"
    assert cal.confirmation_deadline(D(2026, 11, 26)) == D(2026, 11, 20)  # Wed 25, Fri 20
    assert cal.notice_date(D(2026, 11, 25)) == D(2026, 11, 20)


def test_days_in_japan_and_what_is_still_bookable() -> None:
    assert jst_date(datetime.fromisoformat("2026-11-22T15:30:00+00:00")) == D(2026, 11, 23)
    sunday = datetime(2026, 11, 22, 10, 0, tzinfo=JST)
    assert HW.first_bookable(sunday) == D(2026, 11, 26)
    assert KG.first_bookable(sunday) == D(2026, 11, 24)
    tuesday_morning = datetime(2026, 11, 24, 9, 0, tzinfo=JST)
    assert KG.bookable(D(2026, 11, 24), tuesday_morning)
    assert not KG.bookable(D(2026, 11, 24), tuesday_morning.replace(hour=17, minute=1))
    assert KG.bookable(D(2027, 5, 21), sunday) and not KG.bookable(D(2027, 5, 24), sunday)  # 180-day horizon
    days = {d.date: d for d in HW.days(D(2026, 11, 22), D(2026, 11, 30))}
    assert days[D(2026, 11, 23)].confirmation_deadline is None and not days[D(2026, 11, 23)].open
    assert days[D(2026, 11, 30)].notice_date == D(2026, 11, 27)


@settings(max_examples=300, deadline=None)
@given(st.dates(min_value=D(2024, 1, 10), max_value=D(2030, 12, 31)))
def test_r04_r06_properties_of_every_hw_day(day: date) -> None:
    if not HW.is_open(day):
        return
    deadline, notice = HW.confirmation_deadline(day), HW.notice_date(day)
    assert deadline is not None and notice is not None
    between = [deadline + timedelta(days=i) for i in range((day - deadline).days)]
    assert sum(HW.is_open(d) for d in between) == 2  # the deadline and one more open day before the day
    assert HW.is_open(deadline) and HW.is_open(notice) and notice < day
    assert all(not HW.is_open(notice + timedelta(days=i)) for i in range(1, (day - notice).days))


@pytest.mark.parametrize("office", [HW, KG])
def test_closed_days_have_no_deadline_or_notice(office: OfficeCalendar) -> None:
    sunday = office.day(D(2026, 11, 29))
    assert (sunday.open, sunday.confirmation_deadline, sunday.notice_date) == (False, None, None)
