"""Counsellors and when they can take consultations: weekly hours plus dated exceptions (pure).

A KG commissioner serves one or more of the office's areas (R20); an HW job counsellor serves the
whole office (no areas). Times are JST wall-clock spans such as "09:00-12:00"; "24:00" ends a day.
A dated exception replaces that date's weekly spans: an empty list means away all day.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Annotated, ClassVar
from urllib.parse import urlsplit

from pydantic import ConfigDict, EmailStr, Field, field_validator

from shared.clock import jst
from shared.policy import MeetingApp, OfficePolicy
from shared.text import CleanText

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")

Span = tuple[int, int]  # minutes after JST midnight, [start, end)


def parse_span(text: str) -> Span:
    """'09:00-12:30' -> (540, 750); the end may be 24:00, the start must be before it."""
    m = _SPAN.match(text.strip())
    if not m:
        raise ValueError(f"{text!r}: expected HH:MM-HH:MM")
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if not 0 <= start < end <= 24 * 60:
        raise ValueError(f"{text!r}: the start must be before the end, within one day")
    return start, end


def _check_spans(spans: list[str]) -> list[str]:
    for s in spans:
        parse_span(s)
    return [s.strip() for s in spans]


Area = Annotated[str, Field(min_length=1, max_length=50)]
SpanText = Annotated[str, Field(max_length=20, description="HH:MM-HH:MM")]


class DatedException(CleanText):
    """One date whose availability differs from the weekly pattern (leave, an extra session)."""

    PROSE: ClassVar[frozenset[str]] = frozenset({"note"})

    model_config = ConfigDict(extra="forbid", frozen=True)

    date: date
    spans: list[SpanText] = Field(
        default_factory=list, max_length=10, description="replaces the weekly spans; [] = away"
    )
    note: str = Field("", max_length=500)

    _spans = field_validator("spans")(_check_spans)


class Room(CleanText):
    """R16: a standing join URL of the counsellor's, registered by staff (pre-issued rooms: TeleOffice,
    whose host registers meetings in the app; Teams or Skype for Business Server links)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    room_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,40}$")
    app: MeetingApp
    join_url: str = Field(pattern=r"^https://[^\s/?#@]+(/[^\s]*)?$", max_length=500)
    meeting_id: str | None = Field(None, max_length=40, description="the app's meeting id, if it has one")
    passcode: str | None = Field(None, max_length=40, description="the room's passcode, if it has one")

    @property
    def host(self) -> str:
        return (urlsplit(self.join_url).hostname or "").lower()


class Counsellor(CleanText):
    """A counsellor (HW) or administrative-counselling commissioner (KG) of one office."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    counsellor_id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,60}$")
    office_id: str = Field(max_length=64)
    name: str = Field(min_length=1, max_length=100)
    areas: list[Area] = Field(default_factory=list, max_length=20, description="R20: areas served (KG)")
    apps: list[MeetingApp] = Field(default_factory=list, description="R16: apps hosted; [] = any")
    weekly: dict[str, list[SpanText]] = Field(default_factory=dict, description="mon..sun -> HH:MM-HH:MM")
    exceptions: list[DatedException] = Field(default_factory=list, max_length=400)
    active: bool = True
    email: EmailStr | None = Field(
        None, description="work email: told of each assignment, change and cancellation, and the agenda"
    )
    organizer: str | None = Field(
        None,
        max_length=200,
        description="R16 Teams through Graph: the Microsoft Entra user (id or UPN) who organises "
        "this counsellor's meetings",
    )
    rooms: list[Room] = Field(default_factory=list, max_length=20, description="R16: pre-issued rooms")

    @field_validator("weekly")
    @classmethod
    def _weekdays(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = set(v) - set(WEEKDAYS)
        if unknown:
            raise ValueError(f"unknown weekdays {sorted(unknown)}; use {', '.join(WEEKDAYS)}")
        return {day: _check_spans(spans) for day, spans in v.items()}

    @cached_property
    def _parsed(self) -> tuple[dict[str, list[Span]], dict[date, list[Span]]]:
        weekly = {day: [parse_span(s) for s in spans] for day, spans in self.weekly.items()}
        return weekly, {e.date: [parse_span(s) for s in e.spans] for e in self.exceptions}

    def spans_on(self, d: date) -> list[Span]:
        """The JST spans this counsellor works on d: a dated exception wins over the weekly pattern."""
        weekly, exceptions = self._parsed
        if d in exceptions:
            return exceptions[d]
        return weekly.get(WEEKDAYS[d.weekday()], [])

    def available(self, start: datetime, end: datetime) -> bool:
        """Whether [start, end) lies inside one working span of that JST day."""
        s, e = jst(start), jst(end)
        midnight = s.replace(hour=0, minute=0, second=0, microsecond=0)
        if e > midnight + timedelta(days=1):
            return False
        a = int((s - midnight).total_seconds() // 60)
        b = int((e - midnight).total_seconds() // 60)
        return any(lo <= a and b <= hi for lo, hi in self.spans_on(s.date()))

    def serves(self, policy: OfficePolicy, area: str | None) -> bool:
        """R20: in an office with areas, a commissioner takes only requests from an area they serve."""
        if not self.active or self.office_id != policy.office_id:
            return False
        if not policy.areas or area is None:
            return True
        return area in self.areas

    def app_for(self, policy: OfficePolicy) -> MeetingApp:
        """R16: the office's first app this counsellor can host (the office default otherwise)."""
        for app in policy.meeting_apps:
            if not self.apps or app in self.apps:
                return app
        return policy.default_meeting.app


def check_against_policy(c: Counsellor, policy: OfficePolicy, dev_hosts: Sequence[str] = ()) -> list[str]:
    """Problems that make a counsellor record unusable for its office (areas, apps, rooms);
    `dev_hosts`: development join hosts accepted besides the apps' own (never in prod)."""
    problems = []
    known = {a.name for a in policy.areas}
    if policy.areas and not c.areas:
        problems.append(f"R20: {policy.office_id} serves areas {sorted(known)}; name at least one")
    if bad := [a for a in c.areas if a not in known]:
        problems.append(f"R20: {policy.office_id} does not serve {bad}")
    if bad_apps := [a.value for a in c.apps if a not in policy.meeting_apps]:
        problems.append(f"R16: {policy.office_id} does not use {bad_apps}")
    configs = {m.app: m for m in policy.meeting}
    for room in c.rooms:
        config = configs.get(room.app)
        if config is None or config.provider != "pre-issued":
            problems.append(f"R16: {policy.office_id} does not take pre-issued {room.app.value} rooms")
        elif room.host not in config.accepted_hosts() + tuple(dev_hosts):
            accepted = ", ".join(config.accepted_hosts() + tuple(dev_hosts)) or "none configured"
            problems.append(
                f"R16: room {room.room_id}: {room.host} is not a {room.app.value} host ({accepted})"
            )
    if len({r.room_id for r in c.rooms}) != len(c.rooms):
        problems.append("room ids must be unique")
    return problems
