"""Example bookings as booking's store holds them right after intake (status requested, one wished
window of two hours from `start`): used by the read tests and bench/history_booking.py.

store.insert(requested("kushiro-gyosei", at_jst, now, Person(name="釧路 太郎", phone="+81154221234")), [])
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from services.booking.domain import Booking, Person, Status, Window


def requested(
    office_id: str,
    start: datetime,
    now: datetime,
    person: Person,
    *,
    booking_id: str | None = None,
    person_key: str | None = None,
    portal_id: str = "dev-portal",
) -> Booking:
    request_id = uuid.uuid4().hex
    return Booking(
        booking_id=booking_id or uuid.uuid4().hex,
        office_id=office_id,
        portal_id=portal_id,
        request_id=request_id,
        correlation_id=str(uuid.uuid4()),
        status=Status.REQUESTED,
        created_at=now,
        updated_at=now,
        windows=[Window(start, start + timedelta(hours=2))],
        duration_minutes=30,
        person=person,
        person_key=person_key or "p_" + uuid.uuid4().hex,
        terms_version="2023-11-08",
        terms_agreed_at=now,
    )
