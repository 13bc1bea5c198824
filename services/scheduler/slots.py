"""The office's slot grid and the search for free slots (pure: the caller passes what is taken).

Appointments start on the office's grid (opens + k x slot_minutes, JST) and occupy whole grid cells,
so "one reservation per counsellor and cell start" (a unique index) rules out every overlap, also
between appointments of different lengths. A slot must lie on an open day (shared/calendar.py),
inside office hours — [opens, closes): the consultation ends by `closes` — and last at most
`max_minutes` (R01).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from services.scheduler.availability import Counsellor
from shared.calendar import OfficeCalendar
from shared.clock import JST, jst
from shared.policy import OfficePolicy

Cell = tuple[str, datetime]  # (counsellor_id, cell start in UTC)


@dataclass(frozen=True)
class Slot:
    counsellor_id: str
    start: datetime
    end: datetime
    cells: tuple[datetime, ...]

    @property
    def keys(self) -> list[Cell]:
        return [(self.counsellor_id, c) for c in self.cells]

    @property
    def cell_ids(self) -> list[str]:
        """The ids of the reservations that hold this slot's cells."""
        return [cell_id(self.counsellor_id, c) for c in self.cells]


def cell_id(counsellor_id: str, start: datetime) -> str:
    """A reserved cell's id: one counsellor at one cell start (unique: no double booking)."""
    return f"{counsellor_id}@{start:%Y-%m-%dT%H:%MZ}"


class SlotGrid:
    def __init__(self, policy: OfficePolicy, calendar: OfficeCalendar | None = None) -> None:
        self.policy = policy
        self.calendar = calendar or OfficeCalendar(policy)
        self.step = policy.hours.slot_minutes

    def minutes(self, asked: int) -> int:
        """R01: a consultation lasts at most the office's maximum (30 minutes)."""
        return max(1, min(asked, self.policy.max_minutes))

    def cells(self, start: datetime, minutes: int) -> tuple[datetime, ...]:
        n = math.ceil(minutes / self.step)
        return tuple((start + timedelta(minutes=self.step * k)).astimezone(UTC) for k in range(n))

    def slot(self, counsellor_id: str, start: datetime, minutes: int) -> Slot:
        start = start.astimezone(UTC)
        end = start + timedelta(minutes=minutes)
        return Slot(counsellor_id, start, end, self.cells(start, minutes))

    def starts_on(self, day: date, minutes: int) -> Iterator[datetime]:
        """Grid starts on an open day whose consultation ends by closing time."""
        if not self.calendar.is_open(day):
            return
        opens = datetime.combine(day, self.policy.hours.opens, tzinfo=JST)
        closes = datetime.combine(day, self.policy.hours.closes, tzinfo=JST)
        t = opens
        while t + timedelta(minutes=minutes) <= closes:
            yield t.astimezone(UTC)
            t += timedelta(minutes=self.step)

    def day_cells(self, day: date) -> list[datetime]:
        """Every grid cell of the day's office hours, the day open or not: where a reservation can be."""
        opens = datetime.combine(day, self.policy.hours.opens, tzinfo=JST)
        closes = datetime.combine(day, self.policy.hours.closes, tzinfo=JST)
        n = math.ceil((closes - opens) / timedelta(minutes=self.step))
        return [(opens + timedelta(minutes=self.step * k)).astimezone(UTC) for k in range(n)]

    def problem(self, start: datetime, minutes: int, now: datetime, *, lead_time: bool = True) -> str | None:
        """Why a start cannot be booked (rule id first), or None; used for staff-chosen times.
        `lead_time=False`: staff make an exception to the R04 deadline (the caller checked it may)."""
        if minutes > self.policy.max_minutes:
            return f"R01: at most {self.policy.max_minutes} minutes"
        day = jst(start).date()
        if not self.calendar.is_open(day):
            return f"closed on {day}: {self.calendar.closed_because(day)}"
        if start.astimezone(UTC) not in set(self.starts_on(day, minutes)):
            return "not a start on the office's slot grid within office hours"
        if start <= now:
            return "in the past"
        if lead_time and not self.calendar.can_confirm_on(day, jst(now).date()):
            deadline = self.calendar.confirmation_deadline(day)
            return f"R04: a consultation on {day} must be confirmed by {deadline}"
        return None

    def within_deadline(self, start: datetime, now: datetime) -> bool:
        """R04: a consultation starting at `start` may still be confirmed today."""
        return self.calendar.can_confirm_on(jst(start).date(), jst(now).date())

    def bookable_day(self, day: date, now: datetime) -> bool:
        """Open, and still confirmable today (R04: HW confirms at least 2 open days before)."""
        return self.calendar.is_open(day) and self.calendar.can_confirm_on(day, jst(now).date())


def _days(start: datetime, end: datetime) -> Iterator[date]:
    d, last = jst(start).date(), jst(end).date()
    while d <= last:
        yield d
        d += timedelta(days=1)


def in_windows(
    grid: SlotGrid,
    counsellors: Sequence[Counsellor],
    *,
    windows: Iterable[tuple[datetime, datetime]],
    minutes: int,
    now: datetime,
    taken: set[Cell],
) -> list[Slot]:
    """Free slots inside the wished windows, earliest first, then the least-loaded counsellor."""
    load: dict[str, int] = {}
    for cid, _ in taken:
        load[cid] = load.get(cid, 0) + 1
    found: dict[tuple[str, datetime], Slot] = {}
    for w_start, w_end in windows:
        for day in _days(w_start, w_end):
            if not grid.bookable_day(day, now):
                continue
            for t in grid.starts_on(day, minutes):
                if t < w_start or t < now or t + timedelta(minutes=minutes) > w_end:
                    continue
                for c in counsellors:
                    slot = grid.slot(c.counsellor_id, t, minutes)
                    if _free(c, slot, taken):
                        found[(c.counsellor_id, t)] = slot
    return sorted(found.values(), key=lambda s: (s.start, load.get(s.counsellor_id, 0), s.counsellor_id))


def on_day(
    grid: SlotGrid,
    counsellors: Sequence[Counsellor],
    *,
    day: date,
    minutes: int,
    now: datetime,
    taken: set[Cell],
    near: datetime,
) -> list[Slot]:
    """R05: free slots on one day, closest to the wished time of day first (ties: earlier)."""
    if not grid.bookable_day(day, now):
        return []
    wished = jst(near)
    target = wished.hour * 60 + wished.minute
    free = []
    for t in grid.starts_on(day, minutes):
        if t < now:
            continue
        for c in counsellors:
            slot = grid.slot(c.counsellor_id, t, minutes)
            if _free(c, slot, taken):
                free.append(slot)

    def distance(s: Slot) -> tuple[int, datetime, str]:
        local = jst(s.start)
        return (abs(local.hour * 60 + local.minute - target), s.start, s.counsellor_id)

    return sorted(free, key=distance)


def alternative_days(windows: Sequence[tuple[datetime, datetime]], now: datetime, limit: int) -> list[date]:
    """R05: the days after the last wished day (never before today) where alternatives are sought."""
    last = max((jst(end).date() for _, end in windows), default=jst(now).date())
    first = max(last + timedelta(days=1), jst(now).date())
    return [first + timedelta(days=i) for i in range(limit)]


def _free(c: Counsellor, slot: Slot, taken: set[Cell]) -> bool:
    return c.available(slot.start, slot.end) and not any(k in taken for k in slot.keys)
