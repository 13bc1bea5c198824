"""The life of one coordination without any server: confirm, propose, accept, decline, hold expiry,
cancel, reopen, the moves the transition table refuses, and the cells and timers each state wants."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.scheduler.availability import Counsellor
from services.scheduler.domain import (
    KEEP_PAST,
    LEFT_TO_STAFF,
    TRANSITIONS,
    Conflict,
    Coordination,
    IllegalTransition,
    Status,
    Step,
    UnknownOption,
    Upkeep,
    cancellation,
)
from services.scheduler.meeting import MeetingRoom
from services.scheduler.slots import Slot, SlotGrid
from services.scheduler.timing import TimerKind
from shared.clock import JST
from shared.events import (
    AlternativesHeld,
    BookingRequested,
    BookingWindowsChanged,
    LeftToStaff,
    SlotAssigned,
    TimeWindow,
)
from shared.mongo import Doc
from shared.policy import MeetingApp, OfficePolicy, Policies

ROOT = Path(__file__).resolve().parents[2]
POLICIES = Policies.load(ROOT / "deploy" / "offices")
KG, HW = POLICIES["kushiro-gyosei"], POLICIES["kohoku-hellowork"]
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=JST)  # Sunday
CORRELATION = "6f1c8a52-5a0e-4a53-9c0b-8a4f1b0f2c11"


def jst(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=JST)


def counsellor(cid: str, office: OfficePolicy) -> Counsellor:
    return Counsellor.model_validate({"counsellor_id": cid, "office_id": office.office_id, "name": cid})


def opened(policy: OfficePolicy = HW, minutes: int = 30) -> tuple[Coordination, Doc]:
    """A request as booking.requested leaves it, with the document it is stored as."""
    window = TimeWindow(start=jst(2026, 11, 30, 9, 0), end=jst(2026, 11, 30, 9, 30))
    event = BookingRequested(booking_id="b-1", windows=[window], duration_minutes=minutes)
    doc = {**Coordination.open(event, policy, CORRELATION, NOW), "rev": 0}
    return Coordination.of(doc), doc


def slot(start: datetime, who: str = "hw-one", policy: OfficePolicy = HW) -> Slot:
    return SlotGrid(policy).slot(who, start, 30)


def confirm(c: Coordination, start: datetime, by: str = "scheduler", **kw: Any) -> Step:
    s, who = slot(start), counsellor("hw-one", HW)
    room = MeetingRoom(who.app_for(HW), "https://teleoffice.example.org/r/hw-one", room_id="hw-one-1")
    return c.confirm(s, who, room, by=by, now=NOW, **kw)


def propose(c: Coordination, *days: int, by: str = "scheduler") -> Step:
    held = [(c.option_id(k), slot(jst(2026, 12, d, 9, 0))) for k, d in enumerate(days, 1)]
    return c.propose(held, c.hold_until(HW, NOW), by=by, now=NOW)


def in_state(status: Status) -> Coordination:
    """A coordination brought to `status` through the moves that lead there."""
    c, _ = opened()
    if status is Status.CONFIRMED:
        confirm(c, jst(2026, 11, 30, 9, 0))
    elif status in (Status.PROPOSED, Status.DECLINED, Status.HOLD_EXPIRED):
        propose(c, 1, 2)
        if status is Status.DECLINED:
            c.decline(NOW)
        elif status is Status.HOLD_EXPIRED:
            c.expire_hold(1, NOW)
    elif status is Status.NEEDS_STAFF:
        propose(c)
    elif status is Status.CANCELLED:
        c.cancel("person", NOW, NOW)
    elif status is Status.COMPLETED:
        c.status = Status.COMPLETED  # no move leads there (see the domain's docstring)
    return c


# ----------------------------------------------------------------- placing (R01, R05, R06, R16)


def test_r01_a_new_request_is_coordinating_for_at_most_30_minutes() -> None:
    c, doc = opened(minutes=60)
    assert (c.status, c.version, c.minutes) == (Status.COORDINATING, 0, 30)
    assert (doc["status"], doc["asked_minutes"], doc["correlation_id"]) == ("coordinating", 60, CORRELATION)
    assert c.upkeep(POLICIES, NOW) == Upkeep()  # being placed: no cells, no timers yet


def test_r05_r16_confirming_the_earliest_slot_is_version_1_with_its_event_cells_and_timers() -> None:
    c, _ = opened()
    step = confirm(c, jst(2026, 11, 30, 9, 0))
    (event,) = step.events
    assert isinstance(event, SlotAssigned)
    a = event.appointment
    assert (a.counsellor_id, a.start, a.version, a.app) == (
        "hw-one",
        jst(2026, 11, 30, 9, 0),
        1,
        "teleoffice",
    )
    assert step.fields["status"] == "confirmed" and step.fields["confirmed_by"] == "scheduler"
    assert (
        step.fields["appointment_cells"] == ["hw-one@2026-11-30T00:00Z"] and step.fields["proposal"] is None
    )
    up = c.upkeep(POLICIES, NOW)
    assert up.keep_cells == ("hw-one@2026-11-30T00:00Z",)
    assert (up.disarm, up.disarm_below) == ("superseded", 1)  # an earlier version's timers go
    assert [(t.kind, t.version) for t in up.arm] == [(TimerKind.NO_SHOW, 1), (TimerKind.NOTICE, 1)]


def test_r06_kg_confirmation_arms_no_notice_timer() -> None:
    c, _ = opened(KG)
    s, who = slot(jst(2026, 11, 30, 10, 0), "kg-kushiro", KG), counsellor("kg-kushiro", KG)
    room = MeetingRoom(MeetingApp.TEAMS, "https://teams.microsoft.com/l/meetup-join/b-1", provider="graph")
    c.confirm(s, who, room, by="scheduler", now=NOW)
    assert [t.kind for t in c.upkeep(POLICIES, NOW).arm] == [TimerKind.NO_SHOW]


def test_r05_staff_move_a_confirmed_appointment_as_the_next_version() -> None:
    c = in_state(Status.CONFIRMED)
    step = confirm(c, jst(2026, 11, 30, 15, 0), by="staff:kg-desk")
    (event,) = step.events
    assert isinstance(event, SlotAssigned) and event.appointment.version == 2
    assert step.fields["confirmed_by"] == "staff:kg-desk"
    assert c.upkeep(POLICIES, NOW).disarm_below == 2
    with pytest.raises(IllegalTransition, match="the request is confirmed"):
        propose(c, 1)  # staff propose only while the request waits


# ----------------------------------------------------------------- proposals and answers (R05)


def test_r05_no_free_slot_holds_alternatives_until_the_hold_ends() -> None:
    c, _ = opened()
    step = propose(c, 1, 2, 3)
    (event,) = step.events
    assert isinstance(event, AlternativesHeld)
    assert [a.option_id for a in event.alternatives] == ["1-1", "1-2", "1-3"]
    assert event.hold_expires_at == NOW + timedelta(days=2)
    assert (step.fields["status"], step.fields["version"], step.fields["proposal"]["by"]) == (
        "proposed",
        1,
        "scheduler",
    )
    assert step.fields["proposal"]["options"][0]["cells"] == ["hw-one@2026-12-01T00:00Z"]
    up = c.upkeep(POLICIES, NOW)
    assert up.keep_cells == (
        "hw-one@2026-12-01T00:00Z",
        "hw-one@2026-12-02T00:00Z",
        "hw-one@2026-12-03T00:00Z",
    )
    (hold,) = up.arm
    assert (hold.kind, hold.version, hold.due_at, hold.timer_id) == (
        TimerKind.HOLD,
        1,
        NOW + timedelta(days=2),
        "b-1:hold:v1",
    )


def test_r05_nothing_to_offer_leaves_the_request_to_staff() -> None:
    c, _ = opened()
    step = propose(c)
    (event,) = step.events
    assert isinstance(event, LeftToStaff) and c.status is Status.NEEDS_STAFF  # never an empty proposal
    assert event.reason == "no_free_counsellor" and step.fields["proposal"] is None
    assert c.upkeep(POLICIES, NOW).keep_cells == () and c.upkeep(POLICIES, NOW).disarm == "needs_staff"


def test_r05_accepting_a_held_option_books_it_as_version_2() -> None:
    c = in_state(Status.PROPOSED)
    option = c.accept("1-2")
    assert option is not None and option.start == jst(2026, 12, 2, 9, 0) and c.held_at(NOW)
    step = confirm(c, option.start, accepted="1-2")
    assert (c.status, c.version, step.fields["accepted_option"]) == (Status.CONFIRMED, 2, "1-2")
    assert c.accept("1-2") is None  # a redelivered acceptance: nothing more to book
    with pytest.raises(IllegalTransition):
        c.accept("1-1")  # another option after the booking: ignored by the handler


def test_r05_an_unknown_option_is_refused() -> None:
    with pytest.raises(UnknownOption, match="no option '9-9'"):
        in_state(Status.PROPOSED).accept("9-9")


def test_r05_an_acceptance_once_the_hold_ended_confirms_nothing() -> None:
    c = in_state(Status.PROPOSED)
    assert c.proposal is not None
    assert c.held_at(c.proposal.hold_until - timedelta(seconds=1))
    assert not c.held_at(c.proposal.hold_until)  # the answers fire the hold timer instead


def test_r05_declining_releases_the_held_times() -> None:
    c = in_state(Status.PROPOSED)
    assert c.decline(NOW).fields == {"status": "declined", "updated_at": NOW}
    assert c.upkeep(POLICIES, NOW).keep_cells == () and c.upkeep(POLICIES, NOW).disarm == "declined"
    with pytest.raises(IllegalTransition, match="the request is declined"):
        c.decline(NOW)


def test_r05_hold_expiry_releases_the_current_proposal_only() -> None:
    c = in_state(Status.PROPOSED)
    assert c.holds(1) and c.expire_hold(1, NOW).fields == {"status": "hold_expired", "updated_at": NOW}
    assert c.upkeep(POLICIES, NOW).keep_cells == () and c.upkeep(POLICIES, NOW).disarm == "hold_expired"
    staff = in_state(Status.PROPOSED)
    propose(staff, 7, by="staff:hw-desk")  # staff replaced the proposal (version 2)
    assert not staff.expire_hold(1, NOW) and staff.status is Status.PROPOSED  # version 1's timer: stale
    assert not in_state(Status.CONFIRMED).expire_hold(1, NOW)  # accepted meanwhile


def test_r05_staff_offer_1_to_3_times_that_share_no_cell() -> None:
    c = in_state(Status.PROPOSED)
    times = [slot(jst(2026, 12, 7, h, 0)) for h in (13, 14)]
    assert [o for o, _ in c.offer(times, HW)] == ["2-1", "2-2"]  # the next proposal's options
    for refused, why in (([], "propose 1 to 3"), (times * 2, "propose 1 to 3"), (times[:1] * 2, "overlap")):
        with pytest.raises(Conflict, match=why):
            c.offer(refused, HW)


# ----------------------------------------------------------------- cancel and reopen


def test_cancellation_wins_over_every_state_and_nothing_moves_after_it() -> None:
    for status in Status:
        c = in_state(status)
        step = c.cancel("no_show", NOW, NOW)
        assert c.status is Status.CANCELLED and step.fields == cancellation("no_show", NOW, NOW).fields
        assert (c.upkeep(POLICIES, NOW).keep_cells, c.upkeep(POLICIES, NOW).disarm) == ((), "cancelled")
    c = in_state(Status.CANCELLED)
    refused: list[Callable[[], Step]] = [
        lambda: confirm(c, jst(2026, 11, 30, 9, 0)),
        lambda: propose(c, 1),
        lambda: c.reopen(NOW),
    ]
    for move in refused:
        with pytest.raises(IllegalTransition, match="the request is cancelled"):
            move()


def test_r05_staff_reopen_what_automatic_coordination_left_to_them() -> None:
    for status in LEFT_TO_STAFF:
        c = in_state(status)
        assert c.reopen(NOW).fields == {"status": "coordinating", "updated_at": NOW}
        assert confirm(c, jst(2026, 11, 30, 15, 0), by="staff:hw-desk").fields["status"] == "confirmed"
        again = in_state(status)
        again.reopen(NOW)
        assert propose(again, 7, by="staff:hw-desk").fields["status"] == "proposed"
    for status in (Status.COORDINATING, Status.PROPOSED, Status.CONFIRMED, Status.CANCELLED):
        with pytest.raises(IllegalTransition):
            in_state(status).reopen(NOW)


def new_windows(*spans: tuple[datetime, datetime], minutes: int = 30) -> BookingWindowsChanged:
    windows = [TimeWindow(start=a, end=b) for a, b in spans]
    return BookingWindowsChanged(booking_id="b-1", windows=windows, duration_minutes=minutes)


def test_r05_new_windows_place_what_was_left_to_staff_again_as_a_new_request() -> None:
    """KG 第4条(2): the person declined (or nothing could be offered, or the hold lapsed) and gave new
    wished windows: the request is coordinating again with them, then placed as a new one."""
    wed = (jst(2026, 12, 2, 13, 0), jst(2026, 12, 2, 15, 0))
    for status in LEFT_TO_STAFF:
        c = in_state(status)
        step = c.change_windows(new_windows(wed, minutes=45), HW, NOW)
        assert step.fields == {
            "status": "coordinating",
            "updated_at": NOW,
            "windows": [{"start": wed[0], "end": wed[1]}],
            "minutes": 30,  # R01: at most the office's length
            "asked_minutes": 45,
            "windows_changed_at": NOW,
        }
        assert (c.status, c.windows, c.minutes) == (Status.COORDINATING, [wed], 30)
        assert c.upkeep(POLICIES, NOW) == Upkeep()  # being placed: nothing held, nothing armed
        assert not c.change_windows(new_windows(wed, minutes=45), HW, NOW)  # written: placing follows
        version = c.version
        assert confirm(c, wed[0]).fields["version"] == version + 1  # placed like booking.requested
    for status in (Status.PROPOSED, Status.CONFIRMED, Status.CANCELLED):  # staff acted, or cancelled
        with pytest.raises(IllegalTransition, match=f"the request is {status.value}"):
            in_state(status).change_windows(new_windows(wed), HW, NOW)
    placing, _ = opened()  # its own first placing: other windows are not taken over it
    with pytest.raises(IllegalTransition, match="the request is coordinating"):
        placing.change_windows(new_windows(wed), HW, NOW)


def test_refused_transitions_follow_the_table() -> None:
    moves: dict[Status, Callable[[Coordination], Step]] = {
        Status.CONFIRMED: lambda c: confirm(c, jst(2026, 11, 30, 15, 0)),
        Status.PROPOSED: lambda c: propose(c, 7),
        Status.NEEDS_STAFF: propose,
        Status.DECLINED: lambda c: c.decline(NOW),
        Status.COORDINATING: lambda c: c.reopen(NOW),
    }
    for status in Status:
        for to, move in moves.items():
            c = in_state(status)
            if to in TRANSITIONS[status]:
                move(c)
                assert c.status is to, (status, to)
            else:
                with pytest.raises(IllegalTransition, match=f"the request is {status.value}"):
                    move(c)
                assert c.status is status  # a refused move changes nothing


# ----------------------------------------------------------------- timers (R08)


def test_r08_attendance_keeps_the_no_show_timer_disarmed() -> None:
    c = in_state(Status.CONFIRMED)
    c.attended = True
    assert [t.kind for t in c.upkeep(POLICIES, NOW).arm] == [TimerKind.NOTICE]
    assert not c.needs_timer(TimerKind.NO_SHOW, 1, jst(2026, 11, 30, 9, 0))
    assert c.needs_timer(TimerKind.NOTICE, 1, jst(2026, 11, 30, 9, 0))


def test_r08_a_due_timer_fires_only_for_the_appointment_on_record() -> None:
    c, start = in_state(Status.CONFIRMED), jst(2026, 11, 30, 9, 0)
    assert c.needs_timer(TimerKind.NO_SHOW, 1, start)
    assert not c.needs_timer(TimerKind.NO_SHOW, 2, start)  # another version's
    assert not c.needs_timer(TimerKind.NO_SHOW, 1, start + timedelta(minutes=30))  # a lost race's
    assert not c.needs_timer(TimerKind.HOLD, 1, None)  # the proposal was accepted
    assert in_state(Status.PROPOSED).needs_timer(TimerKind.HOLD, 1, None)
    assert not in_state(Status.CANCELLED).needs_timer(TimerKind.NO_SHOW, 0, None)


def test_a_long_past_appointment_arms_no_timers_housekeeping_may_have_dropped() -> None:
    c = in_state(Status.CONFIRMED)
    later = jst(2026, 11, 30, 9, 10) + KEEP_PAST + timedelta(seconds=1)
    assert c.upkeep(POLICIES, later).arm == ()
    assert c.upkeep(POLICIES, later).keep_cells == c.upkeep(POLICIES, NOW).keep_cells


# ----------------------------------------------------------------- what is written is what it is


def test_every_move_writes_what_the_coordination_now_is() -> None:
    """Read back from the document with the step's fields applied, each move's result is the same
    coordination: the write and the model cannot drift apart."""
    c, doc = opened()
    steps: list[Callable[[], Step]] = [
        lambda: propose(c, 1, 2),
        lambda: c.decline(NOW),
        lambda: c.reopen(NOW),
        lambda: propose(c, 7, by="staff:hw-desk"),
        lambda: c.decline(NOW),
        lambda: c.change_windows(new_windows((jst(2026, 12, 7, 9, 0), jst(2026, 12, 7, 12, 0))), HW, NOW),
        lambda: propose(c, 8),
        lambda: confirm(c, jst(2026, 12, 7, 9, 0), accepted="2-1"),
        lambda: confirm(c, jst(2026, 12, 7, 10, 0), by="staff:hw-desk"),
    ]
    for step in steps:
        doc = {**doc, **step().fields}
        assert Coordination.of(doc) == c
    doc = {**doc, "status": "cancelled", **c.cancel("person", NOW, NOW).fields}  # the store sets the status
    assert Coordination.of(doc) == c
