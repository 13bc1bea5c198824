"""Which durable timers an appointment or a proposal needs, and when they are due (pure).

- notice (R06): offices with `notice.day_before` (HW) get one at `OfficeCalendar.notice_at` — the day
  before, or the open day before that, at the office's time — or at `start - notice.before_start`
  (demo and test offices). Offices without day_before (KG) get none: their confirmation email goes
  out on booking.confirmed, so nobody receives two notices.
- no_show (R08): start + the office's grace (10 minutes in the real offices).
- hold (R05): when proposed alternative times stop being held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.calendar import OfficeCalendar
from shared.clock import jst
from shared.policy import OfficePolicy


class TimerKind(StrEnum):
    NOTICE = "notice"
    NO_SHOW = "no_show"
    HOLD = "hold"


@dataclass(frozen=True)
class TimerSpec:
    kind: TimerKind
    booking_id: str
    office_id: str
    version: int
    due_at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def timer_id(self) -> str:
        """Deterministic: arming the same timer twice (a redelivered event) is one timer."""
        return timer_id(self.booking_id, self.kind.value, self.version)


def timer_id(booking_id: str, kind: str, version: int) -> str:
    """The id of a booking's timer of one kind and version (what lets `cancel` look timers up by id)."""
    return f"{booking_id}:{kind}:v{version}"


def notice_due(policy: OfficePolicy, start: datetime) -> datetime | None:
    """R06: when the day-before notice goes out; None for offices that notify on confirmation."""
    if not policy.notice.day_before:
        return None
    if policy.notice.before_start is not None:
        return (start - policy.notice.before_start).astimezone(UTC)
    at = OfficeCalendar(policy).notice_at(jst(start).date())
    return at.astimezone(UTC) if at else None


def no_show_due(policy: OfficePolicy, start: datetime) -> datetime:
    """R08: deemed cancelled when the grace has passed after the start without contact."""
    return (start + policy.no_show_grace).astimezone(UTC)


def appointment_timers(
    policy: OfficePolicy, booking_id: str, start: datetime, version: int
) -> list[TimerSpec]:
    grace = policy.no_show_grace.total_seconds()
    specs = [
        TimerSpec(
            TimerKind.NO_SHOW,
            booking_id,
            policy.office_id,
            version,
            no_show_due(policy, start),
            {"start": start.astimezone(UTC), "grace_seconds": grace},
        )
    ]
    notice = notice_due(policy, start)
    if notice is not None:
        data = {"start": start.astimezone(UTC)}
        specs.append(TimerSpec(TimerKind.NOTICE, booking_id, policy.office_id, version, notice, data))
    return specs


def hold_timer(office_id: str, booking_id: str, until: datetime, version: int) -> TimerSpec:
    return TimerSpec(TimerKind.HOLD, booking_id, office_id, version, until.astimezone(UTC))
