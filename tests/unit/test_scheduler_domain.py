"""Scheduler rules without servers: availability, the slot grid, alternatives, timers, meeting URLs."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from services.scheduler.availability import Counsellor, check_against_policy, parse_span
from services.scheduler.meeting import NoRoom, Rooms
from services.scheduler.slots import SlotGrid, alternative_days, in_windows, on_day
from services.scheduler.timing import TimerKind, appointment_timers, no_show_due, notice_due
from shared.clock import JST
from shared.policy import MeetingApp, OfficeHours, OfficePolicy, Policies

ROOT = Path(__file__).resolve().parents[2]
POLICIES = Policies.load(ROOT / "deploy" / "offices", ROOT / "deploy" / "offices-demo")
KG, HW, DEMO = POLICIES["kushiro-gyosei"], POLICIES["kohoku-hellowork"], POLICIES["demo-town"]
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=JST)  # Sunday


def jst(*args: int) -> datetime:
    return datetime(*args, tzinfo=JST)  # type: ignore[misc]


def counsellor(cid: str, office: OfficePolicy, areas: list[str] | None = None, **kw: object) -> Counsellor:
    week = {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
    return Counsellor.model_validate(
        {
            "counsellor_id": cid,
            "office_id": office.office_id,
            "name": cid,
            "areas": areas or [],
            "weekly": week,
            **kw,
        }
    )


def slots_in(
    policy: OfficePolicy,
    cs: list[Counsellor],
    start: datetime,
    end: datetime,
    *,
    minutes: int = 30,
    taken: set[tuple[str, datetime]] | None = None,
) -> list[tuple[str, datetime]]:
    found = in_windows(
        SlotGrid(policy), cs, windows=[(start, end)], minutes=minutes, now=NOW, taken=taken or set()
    )
    return [(s.counsellor_id, s.start) for s in found]


# ----------------------------------------------------------------- R01 and the grid


def test_r01_appointment_never_longer_than_30_minutes() -> None:
    grid = SlotGrid(KG)
    assert grid.minutes(45) == 30 and grid.minutes(20) == 20
    slot = grid.slot("c", jst(2026, 11, 30, 10, 0), grid.minutes(90))
    assert slot.end - slot.start == timedelta(minutes=30)
    assert grid.problem(jst(2026, 11, 30, 10, 0), 31, NOW) is not None


def test_r01_slots_lie_on_the_office_grid_and_end_by_closing_time() -> None:
    starts = list(SlotGrid(KG).starts_on(date(2026, 11, 30), 30))  # Monday
    assert starts[0] == jst(2026, 11, 30, 9, 0) and starts[-1] == jst(2026, 11, 30, 16, 30)
    assert all(s.minute in (0, 30) for s in starts)
    assert list(SlotGrid(KG).starts_on(date(2026, 11, 29), 30)) == []  # Sunday: closed


def test_earliest_free_slot_first_then_the_least_loaded_counsellor() -> None:
    a, b = counsellor("a", HW), counsellor("b", HW)
    taken = {("a", jst(2026, 11, 30, 9, 0)), ("a", jst(2026, 11, 30, 13, 0))}
    found = slots_in(HW, [a, b], jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 10, 0), taken=taken)
    assert found == [
        ("b", jst(2026, 11, 30, 9, 0)),
        ("b", jst(2026, 11, 30, 9, 30)),
        ("a", jst(2026, 11, 30, 9, 30)),
    ]


def test_cells_cover_the_whole_appointment_so_different_lengths_never_overlap() -> None:
    quarter = HW.model_copy(update={"hours": OfficeHours(slot_minutes=15)})
    grid = SlotGrid(quarter)
    assert len(grid.slot("a", jst(2026, 11, 30, 9, 0), 30).cells) == 2
    assert len(grid.slot("a", jst(2026, 11, 30, 9, 0), 20).cells) == math.ceil(20 / 15)
    short = grid.slot("a", jst(2026, 11, 30, 9, 15), 15)  # someone has 9:15-9:30
    found = slots_in(quarter, [counsellor("a", HW)], jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 10, 0),
                     taken=set(short.keys))  # fmt: skip
    assert [s for _, s in found] == [jst(2026, 11, 30, 9, 30)]  # 9:00-9:30 would overlap it


def test_no_slot_in_the_past() -> None:
    found = slots_in(DEMO, [counsellor("d", DEMO, ["釧路"], weekly={"sun": ["00:00-24:00"]})],
                     jst(2026, 11, 22, 9, 0), jst(2026, 11, 22, 10, 5), minutes=5)  # fmt: skip
    assert [s for _, s in found] == [jst(2026, 11, 22, 10, 0)]


# ----------------------------------------------------------------- availability


def test_weekly_availability_and_dated_exceptions() -> None:
    away, extra = {"date": "2026-12-25", "spans": []}, {"date": "2026-12-26", "spans": ["10:00-11:00"]}
    c = counsellor("c", KG, ["十勝"], exceptions=[away, extra])
    assert c.available(jst(2026, 12, 18, 9, 0), jst(2026, 12, 18, 9, 30))  # Friday
    assert not c.available(jst(2026, 12, 25, 9, 0), jst(2026, 12, 25, 9, 30))  # away that Friday
    assert c.available(jst(2026, 12, 26, 10, 0), jst(2026, 12, 26, 10, 30))  # a Saturday session
    assert not c.available(jst(2026, 12, 18, 16, 45), jst(2026, 12, 18, 17, 15))  # past the span


def test_spans_are_validated() -> None:
    assert parse_span("00:00-24:00") == (0, 1440)
    for bad in ("9-17", "17:00-09:00", "10:00-10:00", "24:30-25:00"):
        with pytest.raises(ValueError):
            parse_span(bad)
    with pytest.raises(ValueError):
        counsellor("c", HW, weekly={"monday": ["09:00-10:00"]})


def test_r20_commissioner_serves_only_the_areas_named() -> None:
    kushiro, tokachi = counsellor("k", KG, ["釧路"]), counsellor("t", KG, ["十勝"])
    assert kushiro.serves(KG, "釧路") and not kushiro.serves(KG, "十勝")
    found = slots_in(KG, [c for c in (kushiro, tokachi) if c.serves(KG, "十勝")],
                     jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 10, 0))  # fmt: skip
    assert {cid for cid, _ in found} == {"t"}
    assert counsellor("h", HW).serves(HW, None)  # HW has no areas


# ----------------------------------------------------------------- R04 and R05


def test_r04_hw_lead_time_skips_holidays() -> None:
    """Sunday 22 Nov: Mon 23 Nov is a holiday, so Wed 25 Nov needed confirming by Fri 20 Nov."""
    c = counsellor("h", HW)
    assert slots_in(HW, [c], jst(2026, 11, 25, 9, 0), jst(2026, 11, 25, 17, 0)) == []
    assert slots_in(HW, [c], jst(2026, 11, 26, 9, 0), jst(2026, 11, 26, 10, 0))  # deadline Tue 24 Nov
    assert "R04" in (SlotGrid(HW).problem(jst(2026, 11, 25, 9, 0), 30, NOW) or "")
    assert slots_in(KG, [counsellor("k", KG, ["釧路"])], jst(2026, 11, 25, 9, 0), jst(2026, 11, 25, 10, 0))


def test_r04_hw_alternatives_start_on_a_later_day_that_can_still_be_confirmed() -> None:
    days = alternative_days([(jst(2026, 11, 25, 9, 0), jst(2026, 11, 25, 12, 0))], NOW, 5)
    assert days[0] == date(2026, 11, 26)
    grid, c = SlotGrid(HW), counsellor("h", HW)
    bookable = [d for d in days if on_day(grid, [c], day=d, minutes=30, now=NOW, taken=set(), near=NOW)]
    assert bookable == [date(2026, 11, 26), date(2026, 11, 27), date(2026, 11, 30)]  # not the weekend


def test_r05_alternatives_prefer_the_wished_time_of_day() -> None:
    found = on_day(SlotGrid(KG), [counsellor("k", KG, ["釧路"])], day=date(2026, 12, 1), minutes=30, now=NOW,
                   taken=set(), near=jst(2026, 11, 30, 14, 10))  # fmt: skip
    assert [s.start for s in found[:3]] == [
        jst(2026, 12, 1, 14, 0),
        jst(2026, 12, 1, 14, 30),
        jst(2026, 12, 1, 13, 30),
    ]


# ----------------------------------------------------------------- R06 and R08 timers


def test_r06_hw_notice_on_the_day_before_at_ten_or_the_open_day_before_that() -> None:
    assert notice_due(HW, jst(2026, 11, 26, 9, 0)) == jst(2026, 11, 25, 10, 0)
    assert notice_due(HW, jst(2026, 11, 30, 9, 0)) == jst(2026, 11, 27, 10, 0)  # Monday -> Friday
    assert notice_due(HW, jst(2026, 11, 24, 9, 0)) == jst(2026, 11, 20, 10, 0)  # Mon 23 is a holiday


def test_r06_kg_gets_no_notice_timer_only_the_no_show_one() -> None:
    kinds = [t.kind for t in appointment_timers(KG, "b", jst(2026, 11, 30, 10, 0), 1)]
    assert kinds == [TimerKind.NO_SHOW]
    assert notice_due(KG, jst(2026, 11, 30, 10, 0)) is None


def test_r06_demo_office_sends_its_notice_shortly_before_the_start() -> None:
    start = jst(2026, 11, 22, 12, 0)
    timers = {t.kind: t for t in appointment_timers(DEMO, "b", start, 3)}
    assert timers[TimerKind.NOTICE].due_at == start - timedelta(seconds=10)
    assert timers[TimerKind.NO_SHOW].due_at == start + timedelta(seconds=5)
    assert timers[TimerKind.NO_SHOW].timer_id == "b:no_show:v3"


def test_r08_no_show_ten_minutes_after_the_start() -> None:
    start = jst(2026, 11, 30, 10, 0)
    assert no_show_due(KG, start) == no_show_due(HW, start) == jst(2026, 11, 30, 10, 10)


# ----------------------------------------------------------------- R16 rooms


def with_room(policy: OfficePolicy, app: str, url: str) -> Counsellor:
    areas = ["釧路"] if policy.areas else None
    return counsellor("r", policy, areas, rooms=[{"room_id": "r1", "app": app, "join_url": url}])


def test_r16_a_pre_issued_room_opens_over_https_on_a_host_of_its_app() -> None:
    with pytest.raises(ValueError, match="join_url"):
        with_room(HW, "teleoffice", "http://teleoffice.example.org/r/1")  # not https
    host = HW.default_meeting.accepted_hosts()[0]
    assert check_against_policy(with_room(HW, "teleoffice", f"https://{host}/r/1"), HW) == []
    (problem,) = check_against_policy(with_room(HW, "teleoffice", "https://evil.example.net/r/1"), HW)
    assert problem.startswith("R16: room r1: evil.example.net is not a teleoffice host")
    dev = with_room(HW, "teleoffice", "https://127.0.0.1:8443/rooms/hw-1")
    assert check_against_policy(dev, HW) and not check_against_policy(dev, HW, ["127.0.0.1"])


def test_r16_kg_teams_meetings_come_from_graph_and_skype_only_as_deprecated_server_rooms() -> None:
    teams, skype = (next(m for m in KG.meeting if m.app == a) for a in ("teams", "skype-for-business"))
    assert teams.provider == "graph" and teams.graph is not None and not teams.deprecated
    assert skype.provider == "pre-issued" and skype.deprecated
    assert "2021年7月31日" in skype.deprecated and "2025年10月14日" in skype.deprecated
    (problem,) = check_against_policy(with_room(KG, "teams", "https://teams.microsoft.com/l/x"), KG)
    assert "does not take pre-issued teams rooms" in problem  # its Teams meetings are Graph's


def test_r16_each_office_only_its_apps_and_the_counsellors_choice() -> None:
    with pytest.raises(NoRoom, match="R16: kohoku-hellowork does not use teams"):
        Rooms.config(HW, MeetingApp.TEAMS)
    assert counsellor("k", KG, ["釧路"]).app_for(KG) == MeetingApp.TEAMS
    assert (
        counsellor("s", KG, ["釧路"], apps=["skype-for-business"]).app_for(KG)
        == MeetingApp.SKYPE_FOR_BUSINESS
    )
    assert counsellor("h", HW).app_for(HW) == MeetingApp.TELEOFFICE


def test_the_queue_api_lists_exactly_the_waiting_statuses() -> None:
    from typing import get_args

    from services.scheduler.api import QueueStatus
    from services.scheduler.domain import WAITING
    from services.scheduler.store.requests import QUEUED

    assert set(get_args(QueueStatus)) == {s.value for s in WAITING} == set(QUEUED)


def test_a_timers_due_marker_is_on_the_jst_day_of_its_due_time_or_of_its_arming_if_later() -> None:
    from services.scheduler.store.timers import due_day

    due = datetime(2026, 12, 3, 14, 59, tzinfo=JST)
    assert due_day(due, None) == date(2026, 12, 3)
    assert due_day(due, due + timedelta(days=2)) == date(2026, 12, 5)  # armed already late
    assert due_day(due.astimezone(JST) + timedelta(hours=9, minutes=1), due) == date(2026, 12, 4)
