"""Re-coordination (R05), the R04 deadline, the double-booking race and the staff API, on a fixed clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from services.scheduler.coordinator import Conflict
from services.scheduler.slots import SlotGrid
from shared.policy import OfficeHours
from tests.integration.test_scheduler_flow import Running, scheduler
from tests.support import eventually
from tests.support.scheduler import HW, KG, STAFF, jst, put_counsellor, request_doc

LEFT = "appointment.left_to_staff"
MON_9 = (jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 9, 30))


async def _take(s: Running, office: str, window: Any, area: str | None = None) -> str:
    event = s.booking.requested(office, [window], area=area)
    await s.booking.send(event)
    await s.probe.wait("appointment.confirmed", event.payload.booking_id)
    return str(event.payload.booking_id)


async def _answer(s: Running, office: str, window: Any, area: str | None, answer: str) -> Any:
    """Request one window and return the scheduler's one answer of type `answer`."""
    event = s.booking.requested(office, [window], area=area)
    await s.booking.send(event)
    (answered,) = await s.probe.wait(answer, event.payload.booking_id)
    return answered


async def _propose(s: Running, office: str, window: Any, area: str | None = None) -> Any:
    return await _answer(s, office, window, area, "appointment.recoordination_proposed")


async def test_r05_full_window_gets_three_held_alternatives_and_accepting_one_confirms_it(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        await _take(s, HW, MON_9)
        proposed = await _propose(s, HW, MON_9)
        bid, alts = proposed.payload.booking_id, proposed.payload.alternatives
        assert [a.start for a in alts] == [jst(2026, 12, d, 9, 0) for d in (1, 2, 3)]  # later days, same time
        assert [a.option_id for a in alts] == ["1-1", "1-2", "1-3"]
        assert proposed.payload.hold_expires_at == s.clock.now() + timedelta(days=2)
        assert {c["kind"] for c in await s.cells(bid)} == {"held"} and len(await s.cells(bid)) == 3
        # a held time is not offered to anyone else meanwhile
        other = await _propose(s, HW, (alts[0].start, alts[0].end))
        assert alts[0].start not in [a.start for a in other.payload.alternatives]

        await s.booking.send(s.booking.accepted(HW, bid, "1-2"))
        (confirmed,) = await s.probe.wait("appointment.confirmed", bid)
        assert confirmed.payload.appointment.start == alts[1].start
        assert confirmed.payload.appointment.version == 2
        cells = await eventually(lambda: _only_booked(s, bid))
        assert [c["start"] for c in cells] == [alts[1].start]

        # tidy frees the cells, then disarms and arms the timers: wait for the timers too
        async def timers_moved() -> bool:
            t = await s.timers(bid)
            return (
                t.get("hold", {}).get("status") == "cancelled"
                and t.get("no_show", {}).get("status") == "pending"
            )

        await eventually(timers_moved, what="the hold disarmed and the no-show timer armed")


async def _only_booked(s: Running, bid: str) -> list[dict[str, Any]]:
    cells = await s.cells(bid)
    return cells if cells and all(c["kind"] == "booked" for c in cells) else []


async def test_r05_declining_releases_the_holds(make_settings: Callable[..., Any], amqp_url: str) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        await _take(s, HW, MON_9)
        bid = (await _propose(s, HW, MON_9)).payload.booking_id
        await s.booking.send(s.booking.declined(HW, bid))

        async def released() -> bool:
            return not await s.cells(bid) and (await request_doc(s.client, bid))["status"] == "declined"

        await eventually(released, what="holds released")

        async def disarmed() -> bool:  # tidy frees the cells first, then disarms the hold timer
            return (await s.timers(bid)).get("hold", {}).get("cancel_reason") == "declined"

        await eventually(disarmed, what="the hold timer disarmed as declined")


async def test_r05_expired_hold_is_released_and_reported(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        await _take(s, HW, MON_9)
        proposed = await _propose(s, HW, MON_9)
        bid = proposed.payload.booking_id
        await s.advance_to(proposed.payload.hold_expires_at - timedelta(seconds=1))
        await s.quiet()
        assert s.probe.of("appointment.hold_expired", bid) == []
        await s.advance_to(proposed.payload.hold_expires_at + timedelta(seconds=3))
        (expired,) = await s.probe.wait("appointment.hold_expired", bid)
        assert expired.payload.lateness_seconds == 3.0
        assert await s.cells(bid) == []
        r = await s.client.get(f"/v1/staff/offices/{HW}/requests", headers=STAFF)
        assert {d["_id"]: d["status"] for d in r.json()}[bid] == "hold_expired"
        # accepting after the expiry confirms nothing
        await s.booking.send(s.booking.accepted(HW, bid, "1-1"))
        await s.quiet()
        assert s.probe.of("appointment.confirmed", bid) == []


async def test_r04_hw_request_past_its_confirmation_deadline_gets_later_days(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """Sunday 22 Nov; Mon 23 Nov is a holiday: Wed 25 Nov should have been confirmed by Fri 20 Nov."""
    async with scheduler(make_settings, amqp_url) as s:
        proposed = await _propose(s, HW, (jst(2026, 11, 25, 9, 0), jst(2026, 11, 25, 17, 0)))
    starts = [a.start for a in proposed.payload.alternatives]
    assert starts == [jst(2026, 11, 26, 9, 0), jst(2026, 11, 27, 9, 0), jst(2026, 11, 30, 9, 0)]


async def test_r05_no_suitable_counsellor_leaves_the_request_to_staff_never_an_empty_proposal(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        left = await _answer(s, KG, MON_9, "根室", LEFT)  # nobody serves 根室 here (R20)
        assert left.payload.reason == "no_free_counsellor"
        await s.quiet()
        assert s.probe.of("appointment.recoordination_proposed", left.payload.booking_id) == []
        r = await s.client.get(f"/v1/staff/offices/{KG}/requests", headers=STAFF)
        assert {d["_id"]: d["status"] for d in r.json()}[left.payload.booking_id] == "needs_staff"


async def test_r05_an_office_that_proposes_by_hand_leaves_a_full_window_to_staff(
    make_settings: Callable[..., Any], amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        hw = s.coordinator.ctx.policies[HW]
        by_hand = hw.model_copy(
            update={"coordination": hw.coordination.model_copy(update={"alternatives": "staff"})}
        )
        monkeypatch.setitem(s.coordinator.ctx.policies._by_id, HW, by_hand)
        await _take(s, HW, MON_9)  # the only counsellor is busy then; other days are free
        left = await _answer(s, HW, MON_9, None, LEFT)
        assert left.payload.reason == "office_coordinates"
        assert await s.cells(left.payload.booking_id) == []  # nothing held on other days


async def test_double_booking_race_50_concurrent_requests_one_confirmation(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        only_then = [{"date": "2026-11-30", "spans": ["09:00-09:30"]}]  # one slot in the whole month
        await put_counsellor(s.client, HW, "hw-one", weekly={}, exceptions=only_then)
        events = [s.booking.requested(HW, [MON_9]) for _ in range(50)]
        started = time.perf_counter()
        docs = await asyncio.gather(*(_place(s, e) for e in events))
        took = time.perf_counter() - started
        statuses = [d["status"] for d in docs]
        assert statuses.count("confirmed") == 1, statuses
        assert statuses.count("needs_staff") == 49  # nothing else to offer: staff coordinate (R05)
        cells = await s.coordinator.ctx.reservations.collection.find({}).to_list()
        people = [
            (c["counsellor_id"], c["start"], c["kind"]) for c in cells if c["counsellor_id"][:5] != "room:"
        ]
        assert people == [("hw-one", MON_9[0], "booked")]
        assert len(cells) == 2  # and the one pre-issued room it meets in (R16)
        print(f"\n50 concurrent requests for one slot: 1 confirmed, 49 to staff in {took:.2f}s")


async def test_unique_cells_let_one_of_50_overlapping_reservations_through(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """Straight at the unique index, with appointments of different lengths on a 15-minute grid."""
    async with scheduler(make_settings, amqp_url) as s:
        grid = SlotGrid(s.coordinator.policy(HW).model_copy(update={"hours": OfficeHours(slot_minutes=15)}))
        slots = [
            grid.slot("hw-one", jst(2026, 11, 30, 9, 0), 30),
            grid.slot("hw-one", jst(2026, 11, 30, 9, 15), 30),
        ]
        store, now = s.coordinator.ctx.reservations, s.clock.now()
        won = await asyncio.gather(
            *(store.reserve(slots[k % 2], office_id=HW, booking_id=f"b{k}", now=now) for k in range(50))
        )
        assert won.count(True) == 1
        winner = f"b{won.index(True)}"
        cells = await store.collection.find({}).to_list()
        assert {c["booking_id"] for c in cells} == {winner} and len(cells) == 2  # losers left nothing behind
        print(f"\n50 concurrent reservations, 2 lengths: 1 won, {store.conflicts} lost at the unique index")


async def _place(s: Running, event: Any) -> dict[str, Any]:
    for _ in range(5):
        try:
            return await s.coordinator.requested(event)
        except Conflict:  # the handler would retry this through the delay queue
            continue
    raise AssertionError("never placed")


async def test_staff_list_confirm_and_propose_by_hand(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        assert (await s.client.get(f"/v1/staff/offices/{HW}/requests")).status_code == 401
        bad = {"X-Staff-Key": "wrong"}
        assert (await s.client.get(f"/v1/staff/offices/{HW}/requests", headers=bad)).status_code == 401
        await put_counsellor(s.client, HW, "hw-two")
        await _take(s, HW, MON_9)
        await _take(s, HW, MON_9)  # both counsellors busy at 9:00
        bid = (await _propose(s, HW, MON_9)).payload.booking_id
        pending = (await s.client.get(f"/v1/staff/offices/{HW}/requests", headers=STAFF)).json()
        assert [d["_id"] for d in pending] == [bid]
        # the queue lists waiting statuses only (a listing of every confirmed request would grow
        # with the office's history): another is a 422 naming the field
        r = await s.client.get(f"/v1/staff/offices/{HW}/requests?status=confirmed", headers=STAFF)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "status", 0]
        r = await s.client.get(f"/v1/staff/offices/{HW}/requests?status=proposed", headers=STAFF)
        assert [d["_id"] for d in r.json()] == [bid]

        url = f"/v1/staff/requests/{bid}"
        taken = {"counsellor_id": "hw-one", "start": MON_9[0].isoformat()}
        assert (await s.client.post(f"{url}/confirm", json=taken, headers=STAFF)).status_code == 409
        too_late = {"counsellor_id": "hw-one", "start": jst(2026, 11, 25, 9, 0).isoformat()}
        r = await s.client.post(f"{url}/confirm", json=too_late, headers=STAFF)
        assert r.status_code == 409 and "R04" in r.text
        off_grid = {"counsellor_id": "hw-one", "start": jst(2026, 11, 30, 9, 10).isoformat()}
        assert (await s.client.post(f"{url}/confirm", json=off_grid, headers=STAFF)).status_code == 409

        options = [
            {"counsellor_id": "hw-two", "start": jst(2026, 11, 30, h, 0).isoformat()} for h in (13, 14)
        ]
        r = await s.client.post(f"{url}/propose", json={"options": options}, headers=STAFF)
        assert r.status_code == 200, r.text
        proposed = await s.probe.wait("appointment.recoordination_proposed", bid, n=2)
        assert [a.start for a in proposed[-1].payload.alternatives] == [
            jst(2026, 11, 30, 13),
            jst(2026, 11, 30, 14),
        ]
        assert len(await s.cells(bid)) == 2  # the automatic alternatives were released

        chosen = {"counsellor_id": "hw-one", "start": jst(2026, 11, 30, 15, 0).isoformat()}
        r = await s.client.post(f"{url}/confirm", json=chosen, headers=STAFF)
        assert r.status_code == 200 and r.json()["confirmed_by"] == "dev-staff"  # the key's person (R10)
        (confirmed,) = await s.probe.wait("appointment.confirmed", bid)
        assert (
            confirmed.payload.appointment.start == jst(2026, 11, 30, 15)
            and confirmed.payload.appointment.version == 3
        )
        assert [c["start"] for c in await s.cells(bid)] == [jst(2026, 11, 30, 15)]
        assert (await s.timers(bid))["hold"]["status"] == "cancelled"


async def test_r04_in_principle_staff_may_confirm_past_the_deadline_for_a_recorded_reason(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """HW 第6条(1) 原則: the deadline bends for staff who say why; the appointment carries the reason."""
    async with scheduler(make_settings, amqp_url) as s:
        await _take(s, HW, MON_9)
        bid = (await _propose(s, HW, MON_9)).payload.booking_id
        url = f"/v1/staff/requests/{bid}/confirm"
        wednesday = {"counsellor_id": "hw-one", "start": jst(2026, 11, 25, 9, 0).isoformat()}
        r = await s.client.post(url, json=wednesday, headers=STAFF)
        assert r.status_code == 409 and "R04" in r.text  # no reason, no exception
        reason = "面接が27日のため、求職者の希望で直前に実施"
        r = await s.client.post(url, json={**wednesday, "late_reason": reason}, headers=STAFF)
        assert r.status_code == 200, r.text
        (confirmed,) = await s.probe.wait("appointment.confirmed", bid)
        assert confirmed.payload.appointment.late_reason == reason
        assert confirmed.payload.appointment.start == jst(2026, 11, 25, 9)
        within = {
            "counsellor_id": "hw-one",
            "start": jst(2026, 11, 30, 15, 0).isoformat(),
            "late_reason": reason,
        }
        r = await s.client.post(url, json=within, headers=STAFF)  # moved to a time within the deadline
        assert r.status_code == 200, r.text
        moved = (await s.probe.wait("appointment.confirmed", bid, n=2))[-1]
        assert moved.payload.appointment.late_reason is None  # nothing to except: not recorded


async def test_staff_confirming_while_the_person_accepts_leaves_one_appointment_on_record(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """A staff confirm and the person's acceptance of a held option at once: whichever goes second
    works on what the first wrote (one writer of a request at a time), so the request, its cells
    and the last appointment.confirmed event all name the same appointment."""
    async with scheduler(make_settings, amqp_url) as s:
        await put_counsellor(s.client, HW, "hw-two")
        for hour in (9, 10, 11, 13, 14):
            wished = (jst(2026, 11, 30, hour, 0), jst(2026, 11, 30, hour, 30))
            await _take(s, HW, wished)
            await _take(s, HW, wished)  # both busy then
            proposed = await _propose(s, HW, wished)
            bid, option = proposed.payload.booking_id, proposed.payload.alternatives[0]
            staff = {"counsellor_id": "hw-two", "start": jst(2026, 12, 7, hour, 0).isoformat()}
            accept = s.booking.send(s.booking.accepted(HW, bid, option.option_id))
            confirm = s.client.post(f"/v1/staff/requests/{bid}/confirm", json=staff, headers=STAFF)
            _, r = await asyncio.gather(accept, confirm)
            assert r.status_code in (200, 409), r.text
            await s.quiet()
            doc = await request_doc(s.client, bid)
            last = max(s.probe.of("appointment.confirmed", bid), key=lambda e: e.payload.appointment.version)
            assert doc["appointment"]["version"] == last.payload.appointment.version
            assert datetime.fromisoformat(doc["appointment"]["start"]) == last.payload.appointment.start
            versions = [e.payload.appointment.version for e in s.probe.of("appointment.confirmed", bid)]
            assert len(versions) == len(set(versions)), versions  # never two appointments of one version
            cells = await s.cells(bid)
            assert [(c["start"], c["kind"]) for c in cells] == [(last.payload.appointment.start, "booked")]


async def test_r05_staff_move_a_confirmed_consultation_to_another_counsellor_and_time(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """A phone call moves a confirmed KG consultation: a new appointment version goes to booking
    (a new confirmation email), the old cell is free, the old timers are replaced by the new ones."""
    async with scheduler(make_settings, amqp_url) as s:
        bid = await _take(s, KG, MON_9, area="釧路")
        await eventually(lambda: _pending_versions(s, bid, {1}), what="the first no-show timer armed")
        await put_counsellor(s.client, KG, "kg-kushiro-2", areas=["釧路"])
        moved = {"counsellor_id": "kg-kushiro-2", "start": jst(2026, 12, 1, 14, 0).isoformat()}
        r = await s.client.post(f"/v1/staff/requests/{bid}/confirm", json=moved, headers=STAFF)
        assert r.status_code == 200, r.text
        second = (await s.probe.wait("appointment.confirmed", bid, n=2))[-1].payload.appointment
        assert (second.version, second.counsellor_id, second.start) == (
            2,
            "kg-kushiro-2",
            jst(2026, 12, 1, 14),
        )
        assert [(c["counsellor_id"], c["start"]) for c in await s.cells(bid)] == [
            ("kg-kushiro-2", jst(2026, 12, 1, 14))
        ]  # the 9:00 cell is free again
        await eventually(lambda: _pending_versions(s, bid, {2}), what="only the new no-show timer pending")
        other = await _take(s, KG, MON_9, area="釧路")  # the freed time can be booked again
        assert other != bid


async def _pending_versions(s: Running, bid: str, versions: set[int]) -> bool:
    r = await s.client.get("/v1/staff/timers", params={"booking_id": bid, "status": "pending"}, headers=STAFF)
    return {int(t["_id"].rsplit(":v", 1)[1]) for t in r.json()} == versions


async def test_staff_manage_counsellors_and_see_free_slots(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        c = s.client
        r = await c.put(
            f"/v1/staff/offices/{KG}/counsellors/kg-x", json={"name": "x", "areas": ["札幌"]}, headers=STAFF
        )
        assert r.status_code == 422 and "R20" in r.text
        r = await c.put(
            f"/v1/staff/offices/{HW}/counsellors/hw-x", json={"name": "x", "apps": ["teams"]}, headers=STAFF
        )
        assert r.status_code == 422 and "R16" in r.text
        await put_counsellor(
            c, HW, "hw-x", weekly={"mon": ["09:00-10:00"]}, exceptions=[{"date": "2026-12-07", "spans": []}]
        )
        slots = (
            await c.get(f"/v1/staff/offices/{HW}/free-slots", params={"day": "2026-11-30"}, headers=STAFF)
        ).json()
        assert {(x["counsellor_id"], x["start"][11:16]) for x in slots if x["counsellor_id"] == "hw-x"} == {
            ("hw-x", "00:00"),
            ("hw-x", "00:30"),
        }  # 9:00 and 9:30 JST
        near = {"day": "2026-11-30", "near": jst(2026, 11, 30, 9, 30).isoformat()}
        closest = (await c.get(f"/v1/staff/offices/{HW}/free-slots", params=near, headers=STAFF)).json()
        mine = [x["start"][11:16] for x in closest if x["counsellor_id"] == "hw-x"]
        assert mine == ["00:30", "00:00"]  # R05: the wished time first
        away = (
            await c.get(f"/v1/staff/offices/{HW}/free-slots", params={"day": "2026-12-07"}, headers=STAFF)
        ).json()
        assert "hw-x" not in {x["counsellor_id"] for x in away}
        assert (await c.delete(f"/v1/staff/offices/{HW}/counsellors/hw-x", headers=STAFF)).status_code == 204
        listed = (await c.get(f"/v1/staff/offices/{HW}/counsellors", headers=STAFF)).json()
        assert "hw-x" not in {x["counsellor_id"] for x in listed}
