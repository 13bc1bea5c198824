"""New wished windows after a decline (R05, KG 第4条(2) 改めて日程調整させていただきます): booking and the
scheduler in-process together, against real RabbitMQ, FerretDB and the Graph contract server, on one
fixed clock (Sunday 2026-11-22 10:00 JST). The portal talks to booking only; booking and the scheduler
talk over the broker as in production, and their views of the booking must agree at every rest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx
import pytest

from examples import forms
from services.scheduler.app import create_app as scheduler_app
from shared import topology
from shared.clock import JST
from shared.policy import OfficePolicy
from tests.support import eventually, serve
from tests.support.agreement import disagreement
from tests.support.booking import KG, STAFF_KEY, Harness, parked, running
from tests.support.scheduler import STAFF, put_counsellor, request_doc, scheduler_settings

TUE, WED, THU = date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 26)
#: the one commissioner of 釧路 works on Wednesday afternoons only: Tuesday's wish cannot be met
WEDNESDAY_AFTERNOONS = {"wed": ["13:00-17:00"]}


@dataclass
class Both:
    """The booking harness (its tap sees every event) and the scheduler's staff API."""

    h: Harness
    scheduler: httpx.AsyncClient
    scheduler_app: Any

    async def request(self, booking_id: str) -> dict[str, Any]:
        return await request_doc(self.scheduler, booking_id)

    async def settles(self, booking_id: str, status: str) -> dict[str, Any]:
        """Until booking shows `status` and the scheduler's request agrees with it (R05)."""

        async def agreed() -> dict[str, Any] | None:
            view = await self.h.get(booking_id, STAFF_KEY)
            if view["status"] != status:
                return None
            return view if disagreement(view, await self.request(booking_id)) is None else None

        view = await eventually(agreed, timeout=30, what=f"{booking_id} {status}, the scheduler agreeing")
        assert view is not None
        return view

    async def windows(self, booking_id: str, body: dict[str, Any]) -> httpx.Response:
        return await self.h.portal("POST", f"/v1/bookings/{booking_id}/windows", json=body)

    async def decline(self, booking_id: str) -> None:
        r = await self.h.portal("POST", f"/v1/bookings/{booking_id}/alternatives/decline")
        assert r.status_code == 200, r.text
        await self.settles(booking_id, "awaiting_coordination")

    def staff_only(self, monkeypatch: pytest.MonkeyPatch, office: str) -> None:
        """Office policy `coordination.alternatives: staff` in both services, for this test."""
        booking = self.h.client._transport.app.state.service.policies  # type: ignore[attr-defined]
        for policies in (booking, self.scheduler_app.state.coordinator.ctx.policies):
            policy: OfficePolicy = policies[office]
            rules = policy.coordination.model_copy(update={"alternatives": "staff"})
            monkeypatch.setitem(policies._by_id, office, policy.model_copy(update={"coordination": rules}))


@pytest.fixture
async def s(make_settings: Callable[..., Any], amqp_url: str) -> AsyncIterator[Both]:
    async with running(make_settings, amqp_url) as h:
        app = scheduler_app(scheduler_settings(make_settings), h.clock)  # one clock for both
        async with serve(app) as scheduler:
            await put_counsellor(scheduler, KG, "kg-kushiro", areas=["釧路"], weekly=WEDNESDAY_AFTERNOONS)
            yield Both(h, scheduler, app)


def jst(day: date, hhmm: str) -> datetime:
    return datetime.combine(day, datetime.strptime(hhmm, "%H:%M").time(), JST)


def start_of(view: dict[str, Any]) -> datetime:
    """The appointment's start (views show UTC)."""
    return datetime.fromisoformat(view["appointment"]["start"])


async def kg_booking(s: Both, day: date = TUE) -> str:
    r = await s.h.book(KG, forms.kg_form(s.h.policy(KG), day, s.h.now))
    assert r.status_code == 202, r.text
    return str(r.json()["booking_id"])


async def test_r05_declined_then_new_windows_are_coordinated_again_until_confirmed(s: Both) -> None:
    """The person declines, gives windows that cannot be met either (a new proposal, with times),
    declines again and gives windows that can: confirmed in them, the person told at each step."""
    bid = await kg_booking(s)
    first = await s.settles(bid, "recoordination_proposed")
    assert [a["option_id"] for a in first["alternatives"]][:1] == ["1-1"]
    refused = await s.windows(bid, forms.windows_form((WED, "14:00", "16:00")))
    assert (refused.status_code, refused.json()["error"], refused.json()["status"]) == (
        409,
        "illegal-transition",
        "recoordination_proposed",
    )  # the proposal stands until the person answers it
    await s.decline(bid)
    [told] = await s.h.events.wait("booking.awaiting_coordination", booking_id=bid)
    assert told["payload"]["reason"] == "declined"

    r = await s.windows(bid, forms.windows_form((THU, "10:00", "12:00")))  # nobody works on Thursday
    assert (r.status_code, r.json()["status"]) == (200, "requested"), r.text
    assert [
        (datetime.fromisoformat(w["start"]), datetime.fromisoformat(w["end"])) for w in r.json()["windows"]
    ] == [(jst(THU, "10:00"), jst(THU, "12:00"))]
    [changed] = await s.h.events.wait("booking.windows_changed", booking_id=bid)
    assert changed["payload"]["duration_minutes"] == 30
    again = await s.settles(bid, "recoordination_proposed")  # proposed other times, with times
    assert again["alternatives"] and {a["option_id"][:2] for a in again["alternatives"]} == {"2-"}
    await s.h.events.wait("booking.recoordination_proposed", n=2, booking_id=bid)

    await s.decline(bid)
    r = await s.windows(bid, forms.windows_form((WED, "14:00", "16:00")))
    assert r.status_code == 200, r.text
    view = await s.settles(bid, "confirmed")
    assert start_of(view) == jst(WED, "14:00")
    assert view["appointment"]["version"] == 3  # proposal 1, proposal 2, the appointment
    [confirmed] = await s.h.events.wait("booking.confirmed", booking_id=bid)
    assert confirmed["payload"]["appointment"]["counsellor_id"] == "kg-kushiro"
    notes = [c["note"] for c in view["history"] if c["note"].startswith("new wished windows")]
    assert notes == [
        "new wished windows from portal:dev-portal: 2026年11月26日(木) 10:00〜12:00 (30 min)",
        "new wished windows from portal:dev-portal: 2026年11月25日(水) 14:00〜16:00 (30 min)",
    ]
    request = await s.request(bid)
    assert [datetime.fromisoformat(w["start"]) for w in request["windows"]] == [jst(WED, "14:00")]


async def test_r05_where_the_office_coordinates_by_hand_new_windows_wait_for_staff_shown_to_them(
    s: Both, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Office policy `coordination.alternatives: staff`: windows that cannot be met go to staff with the
    new windows on the request, and the person hears the office is arranging a time; staff confirm."""
    s.staff_only(monkeypatch, KG)
    bid = await kg_booking(s)
    await s.settles(bid, "awaiting_coordination")  # nothing in Tuesday's window: left to staff
    r = await s.windows(bid, forms.windows_form((THU, "13:00", "15:00"), (TUE, "13:00", "14:00")))
    assert r.status_code == 200, r.text
    await s.h.events.wait("booking.windows_changed", booking_id=bid)
    told = await s.h.events.wait("booking.awaiting_coordination", n=2, booking_id=bid)
    assert [t["payload"]["reason"] for t in told] == ["office_coordinates", "office_coordinates"]
    await s.settles(bid, "awaiting_coordination")
    request = await s.request(bid)
    assert request["status"] == "needs_staff" and request["left_to_staff"] == "office_coordinates"
    starts = [datetime.fromisoformat(w["start"]) for w in request["windows"]]
    assert starts == [jst(THU, "13:00"), jst(TUE, "13:00")]  # staff see the new windows
    waiting = await s.scheduler.get(f"/v1/staff/offices/{KG}/requests", headers=STAFF)
    assert bid in [d["_id"] for d in waiting.json()]
    body = {"counsellor_id": "kg-kushiro", "start": jst(WED, "13:00").isoformat()}
    r = await s.scheduler.post(f"/v1/staff/requests/{bid}/confirm", json=body, headers=STAFF)
    assert r.status_code == 200, r.text
    view = await s.settles(bid, "confirmed")
    assert start_of(view) == jst(WED, "13:00")


async def test_r05_new_windows_refused_422_per_field_409_by_state_and_parked_over_amqp(s: Both) -> None:
    """Bad windows are a 422 naming each field and its rule, nothing written; a booking that is not
    waiting for coordination is a 409 with its state; over AMQP the same commands are parked with the
    reason, and a good one is coordinated like the HTTP one."""
    bid = await kg_booking(s)
    await s.settles(bid, "recoordination_proposed")
    await s.decline(bid)
    before = await s.h.get(bid, STAFF_KEY)
    bad = await s.windows(
        bid, forms.windows_form((date(2026, 11, 29), "10:00", "11:00"), duration_minutes=45)
    )
    assert bad.status_code == 422, bad.text
    assert {e["field"]: e["rule"] for e in bad.json()["errors"]} == {
        "windows.0": "R02",
        "duration_minutes": "R01",
    }
    late = await s.windows(
        bid, {"windows": [{"start": "2026-11-22T09:00:00+09:00", "end": "2026-11-22T09:30:00+09:00"}]}
    )
    assert [(e["field"], e["rule"]) for e in late.json()["errors"]] == [("windows.0", "R02")]
    unknown = await s.windows(bid, {"windows": [], "address": "北海道釧路市"})
    assert unknown.status_code == 422 and {e["field"] for e in unknown.json()["errors"]} == {
        "windows",
        "address",
    }
    after = await s.h.get(bid, STAFF_KEY)
    assert (after["status"], after["version"]) == ("awaiting_coordination", before["version"])  # unwritten

    portal = "dev-portal"
    sunday = forms.windows_command(
        portal, KG, bid, forms.windows_form((date(2026, 11, 29), "10:00", "11:00")), sent_at=s.h.now
    )
    stranger = forms.windows_command(
        portal, KG, "no-such-booking", forms.windows_form((WED, "14:00", "15:00")), sent_at=s.h.now
    )
    found: dict[str, tuple[str, str]] = {}

    async def parked_now(n: int) -> bool:
        for m in await parked(s.h.amqp_url, topology.BOOKING.parking):
            headers = m.headers or {}
            reason, detail = headers[topology.REASON_HEADER], headers[topology.DETAIL_HEADER]
            found[str(m.message_id)] = (str(reason), str(detail))
        return len(found) >= n

    for command in (sunday, stranger):
        await s.h.publish(command, "booking.change_windows")
    await eventually(lambda: parked_now(2), what="the invalid and the stranger's commands parked")
    reason, detail = found[sunday["message_id"]]
    assert reason == "invalid-windows" and "windows.0" in detail and "(R02)" in detail
    assert found[stranger["message_id"]][0] == "unknown-booking"

    good = forms.windows_command(
        portal, KG, bid, forms.windows_form((WED, "14:00", "15:00")), sent_at=s.h.now
    )
    await s.h.publish(good, "booking.change_windows")
    view = await s.settles(bid, "confirmed")  # coordinated as the HTTP windows are
    assert start_of(view) == jst(WED, "14:00")
    taken = forms.windows_command(
        portal, KG, bid, forms.windows_form((WED, "15:00", "16:00")), sent_at=s.h.now
    )
    await s.h.publish(taken, "booking.change_windows")
    await eventually(lambda: parked_now(3), what="the command for a confirmed booking parked")
    assert found[taken["message_id"]] == (
        "illegal-transition",
        "a booking that is confirmed cannot be given new windows",
    )
    conflict = await s.windows(bid, forms.windows_form((WED, "15:00", "16:00")))
    assert (conflict.status_code, conflict.json()["status"]) == (409, "confirmed")
    assert good["message_id"] not in found
    assert start_of(await s.h.get(bid, STAFF_KEY)) == jst(WED, "14:00")
