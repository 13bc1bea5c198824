"""The office calendar: open days (開庁日), the R04 confirmation deadline and the R06 notice date.

Dates are calendar dates in Asia/Tokyo. Closed: the office's closed weekdays (Saturday and Sunday),
national and substitute holidays from the `holidays` package, Dec 29 – Jan 3, and the office's extra
closed days.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property

import holidays

from shared.clock import JST, jst
from shared.policy import OfficePolicy

#: How far the calendar searches for an open day before giving up (a policy closing every day).
_SEARCH_LIMIT = 60


@dataclass(frozen=True)
class CalendarDay:
    date: dt.date
    open: bool
    closed_because: str | None
    confirmation_deadline: dt.date | None
    notice_date: dt.date | None


def jst_date(at: datetime) -> date:
    """The calendar date in Japan of an instant: every rule's 'day' is a JST day."""
    return jst(at).date()


class OfficeCalendar:
    def __init__(self, policy: OfficePolicy) -> None:
        self.policy = policy

    @cached_property
    def _holidays(self) -> holidays.HolidayBase:
        return holidays.country_holidays("JP", language="ja")

    def closed_because(self, d: date) -> str | None:
        """Why the office is closed on d, or None if it is open."""
        if d.weekday() in self.policy.closed_weekdays:
            return "土曜日" if d.weekday() == 5 else "日曜日" if d.weekday() == 6 else "閉庁曜日"
        if self.policy.national_holidays_closed and d in self._holidays:
            return str(self._holidays.get(d))
        if self.policy.year_end_closure and (
            (d.month == 12 and d.day >= 29) or (d.month == 1 and d.day <= 3)
        ):
            return "年末年始"
        if d in self.policy.extra_closed_days:
            return "臨時閉庁日"
        return None

    def is_open(self, d: date) -> bool:
        return self.closed_because(d) is None

    def open_day_before(self, d: date, n: int = 1) -> date:
        """The n-th open day strictly before d."""
        day, found = d, 0
        for _ in range(_SEARCH_LIMIT * max(n, 1)):
            day -= timedelta(days=1)
            if self.is_open(day):
                found += 1
                if found == n:
                    return day
        raise ValueError(f"{self.policy.office_id}: no open day before {d}")

    def confirmation_deadline(self, d: date) -> date | None:
        """R04: the last date a consultation on d may be confirmed; None when the office sets no lead time."""
        n = self.policy.lead_time_open_days
        return self.open_day_before(d, n) if n else None

    def can_confirm_on(self, consultation: date, today: date) -> bool:
        deadline = self.confirmation_deadline(consultation)
        return deadline is None or today <= deadline

    def notice_date(self, d: date) -> date | None:
        """R06: the day before d, or if that day is closed, the open day just before it."""
        if not self.policy.notice.day_before:
            return None
        before = d - timedelta(days=1)
        return before if self.is_open(before) else self.open_day_before(before)

    def notice_at(self, d: date) -> datetime | None:
        """The instant the day-before notice goes out (JST time of day from the policy)."""
        nd = self.notice_date(d)
        if nd is None:
            return None
        return datetime.combine(nd, self.policy.notice.send_at, tzinfo=JST)

    def hours_on(self, d: date) -> tuple[datetime, datetime]:
        """Opening and closing instants of the office on d (JST)."""
        h = self.policy.hours
        return datetime.combine(d, h.opens, tzinfo=JST), datetime.combine(d, h.closes, tzinfo=JST)

    def bookable(self, d: date, now: datetime) -> bool:
        """Whether a person may still ask for a consultation on d: open, not past, within the booking
        horizon, R04 deadline not passed."""
        today = jst_date(now)
        if d < today or d > jst_date(now + self.policy.booking_horizon):
            return False
        if not self.is_open(d) or not self.can_confirm_on(d, today):
            return False
        return d > today or now < self.hours_on(d)[1]

    def first_bookable(self, now: datetime) -> date:
        """The earliest date a consultation can still be asked for."""
        d = jst_date(now)
        for _ in range(_SEARCH_LIMIT * 2):
            if self.bookable(d, now):
                return d
            d += timedelta(days=1)
        raise ValueError(f"{self.policy.office_id}: nothing bookable soon after {d}")

    def day(self, d: date) -> CalendarDay:
        reason = self.closed_because(d)
        is_open = reason is None
        return CalendarDay(
            date=d,
            open=is_open,
            closed_because=reason,
            confirmation_deadline=self.confirmation_deadline(d) if is_open else None,
            notice_date=self.notice_date(d) if is_open else None,
        )

    def days(self, start: date, end: date) -> list[CalendarDay]:
        return [self.day(start + timedelta(days=i)) for i in range((end - start).days + 1)]
