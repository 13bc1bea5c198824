"""Booking's and the scheduler's view of each booking agree (R05: they may never disagree).

Booking is the authority on the person's side of a booking, the scheduler on its coordination; each
booking state allows only the coordination states that can stand beside it once the messages between
the two have been handled. A confirmed booking also carries the scheduler's appointment (same version,
same start). Used at the end of the end-to-end session and of the chaos drills, over every booking.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import httpx

from tests import support

#: booking status -> the scheduler statuses that agree with it (when nothing is in flight)
AGREES: dict[str, frozenset[str]] = {
    "requested": frozenset({"coordinating"}),
    "recoordination_proposed": frozenset({"proposed"}),
    "alternative_accepted": frozenset({"proposed", "confirmed"}),  # the acceptance on its way
    "awaiting_coordination": frozenset({"needs_staff", "declined", "hold_expired"}),
    "declined": frozenset({"declined"}),  # bookings from before a decline was coordinated again
    "confirmed": frozenset({"confirmed"}),
    "attended": frozenset({"confirmed"}),
    "completed": frozenset({"confirmed", "completed"}),
    "cancelled": frozenset({"cancelled"}),
    "rejected": frozenset({"cancelled"}),  # confirmed after the R04 deadline: booking cancelled it
}
WITH_APPOINTMENT = frozenset({"confirmed", "attended", "completed"})


def disagreement(booking: dict[str, Any], request: dict[str, Any] | None) -> str | None:
    """Why these two views of one booking disagree, or None."""
    status = booking["status"]
    if request is None:
        return f"booking is {status}, the scheduler has no request"
    if request["status"] not in AGREES[status]:
        return f"booking is {status}, the scheduler's request is {request['status']}"
    if status in WITH_APPOINTMENT:
        mine, theirs = booking.get("appointment_record") or {}, request.get("appointment") or {}
        if (mine.get("version"), _utc(mine.get("start"))) != (
            theirs.get("version"),
            _utc(theirs.get("start")),
        ):
            return (
                f"appointments differ: booking {mine.get('version')} {mine.get('start')}, scheduler {theirs}"
            )
    return None


def _utc(value: Any) -> datetime | None:
    """Both views show datetimes as ISO text, in their own spelling (Z, +00:00, or naive UTC)."""
    if not isinstance(value, str):
        return None
    at = datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def bookings_of(client: httpx.AsyncClient, offices: Iterable[str]) -> list[dict[str, Any]]:
    """Every booking of these offices, by booking's staff list (pages of 500)."""
    found: list[dict[str, Any]] = []
    for office in offices:
        offset = 0
        while True:
            r = await client.get(f"/v1/offices/{office}/bookings", params={"limit": 500, "offset": offset})
            r.raise_for_status()
            page = r.json()
            found += page
            if len(page) < 500:
                break
            offset += 500
    return found


async def check(
    booking: httpx.AsyncClient, scheduler: httpx.AsyncClient, offices: Iterable[str], timeout: float = 120
) -> int:
    """Until every booking of these offices agrees with the scheduler (what is still in flight
    settles meanwhile); returns how many were compared. Fails naming each disagreement."""
    offices = list(offices)
    problems: dict[str, str] = {}
    compared = 0

    async def agreed() -> bool:
        nonlocal compared
        problems.clear()
        views = await bookings_of(booking, offices)
        compared = len(views)
        for b in views:
            r = await scheduler.get(f"/v1/staff/requests/{b['booking_id']}")
            request = r.json() if r.status_code == 200 else None
            if (why := disagreement(b, request)) is not None:
                problems[b["booking_id"]] = why
        return not problems

    try:
        await support.eventually(agreed, timeout=timeout, interval=1, what="booking and scheduler agree")
    except AssertionError:
        raise AssertionError(
            f"{len(problems)} of {compared} bookings: booking and scheduler disagree: {problems}"
        ) from None
    return compared
