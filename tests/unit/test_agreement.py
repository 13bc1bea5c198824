"""The check that booking and the scheduler agree on a booking (R05) can fail, and says why."""

from __future__ import annotations

from tests.support.agreement import AGREES, disagreement

START = "2026-12-04T01:00:00Z"


def test_r05_agreeing_and_disagreeing_views_of_one_booking() -> None:
    waiting = {"status": "awaiting_coordination"}
    assert disagreement(waiting, {"status": "needs_staff"}) is None
    assert disagreement(waiting, {"status": "declined"}) is None
    assert disagreement({"status": "declined"}, {"status": "declined"}) is None  # from before
    assert disagreement(waiting, None) == "booking is awaiting_coordination, the scheduler has no request"
    # the defect this check was added for: a decline that ended the booking while staff could confirm
    said = disagreement({"status": "declined"}, {"status": "confirmed"})
    assert said == "booking is declined, the scheduler's request is confirmed"
    confirmed = {"status": "confirmed", "appointment_record": {"version": 2, "start": START}}
    same = {"status": "confirmed", "appointment": {"version": 2, "start": "2026-12-04T01:00:00"}}
    assert disagreement(confirmed, same) is None  # naive UTC and Z spell one instant
    moved = {"status": "confirmed", "appointment": {"version": 3, "start": "2026-12-04T02:00:00+00:00"}}
    assert (disagreement(confirmed, moved) or "").startswith("appointments differ")
    assert set(AGREES) >= {"requested", "confirmed", "cancelled", "rejected", "completed"}
