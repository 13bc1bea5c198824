"""Injected time: services ask a Clock, never `datetime.now()`, so tests and the demo can move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

JST = ZoneInfo("Asia/Tokyo")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """The system clock moved by the number of seconds written in a file.

    For tests of whole service processes, which cannot be handed a FixedClock: the test moves the
    processes' time by rewriting the file (`write_offset`), so a timer comes due when the test says,
    not when a slow machine gets there. Refused outside tests (shared/settings.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> datetime:
        # read every time: a file's mtime can stay the same across two quick rewrites
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            text = ""
        return datetime.now(UTC) + timedelta(seconds=float(text or 0))

    @staticmethod
    def write_offset(path: Path, seconds: float) -> None:
        """Set the offset atomically (a reader never sees half a number)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{seconds!r}\n")
        tmp.replace(path)


class FixedClock:
    """A clock for tests: it stands still until moved."""

    def __init__(self, at: datetime) -> None:
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta) -> None:
        self._at += delta

    def set(self, at: datetime) -> None:
        self._at = at.astimezone(UTC)


def utc(dt: datetime) -> datetime:
    """Normalise an aware datetime to UTC; naive datetimes are refused."""
    if dt.tzinfo is None:
        raise ValueError("naive datetime: times must carry a zone")
    return dt.astimezone(UTC)


def jst(dt: datetime) -> datetime:
    """The same instant shown in Japan Standard Time."""
    if dt.tzinfo is None:  # PyMongo returns naive UTC unless tz_aware is set
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(JST)


WEEKDAYS_JA = "月火水木金土日"


def format_jst(start: datetime, end: datetime | None = None) -> str:
    """Japanese form, e.g. 2026年11月25日(水) 10:00〜10:30."""
    s = jst(start)
    text = f"{s.year}年{s.month}月{s.day}日({WEEKDAYS_JA[s.weekday()]}) {s:%H:%M}"
    if end is not None:
        text += f"〜{jst(end):%H:%M}"
    return text
