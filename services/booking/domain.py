"""Booking rules and state changes. Plain Python: no I/O, no framework."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from shared.events import Payload


class Status(StrEnum):
    REQUESTED = "requested"
    CONFIRMED = "confirmed"


@dataclass
class Booking:
    booking_id: str
    office_id: str
    status: Status
    created_at: datetime
    windows: list[tuple[datetime, datetime]]
    duration_minutes: int
    pending: list[Payload] = field(default_factory=list)

    def to_doc(self) -> dict[str, Any]:
        return {
            "_id": self.booking_id,
            "office_id": self.office_id,
            "status": self.status.value,
            "created_at": self.created_at,
            "windows": [{"start": s, "end": e} for s, e in self.windows],
            "duration_minutes": self.duration_minutes,
        }
