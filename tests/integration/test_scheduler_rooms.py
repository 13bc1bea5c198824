"""R16 rooms that open and R08 attendance from the meeting: the scheduler in-process against real
RabbitMQ and FerretDB, and against the local Graph contract server (deploy/graph_contract.py) that
answers Microsoft Graph's documented requests (Microsoft itself is not reachable from here)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from services.scheduler.app import unready_rooms
from services.scheduler.graph_clients import GraphClients
from shared.events import appointment_id
from tests.integration.test_scheduler_flow import Running, scheduler
from tests.support import GRAPH_URL, GraphContract, eventually
from tests.support.scheduler import (
    HW,
    KG,
    STAFF,
    jst,
    put_counsellor,
    put_room,
    request_doc,
    scheduler_settings,
)

GRAPH = GraphContract()
MONDAY_10 = (jst(2026, 11, 30, 10, 0), jst(2026, 11, 30, 10, 30))


async def _kg_confirmed(
    s: Running, window: tuple[Any, Any] = MONDAY_10, *, fault: tuple[int, float | None] | None = None
) -> tuple[str, Any]:
    """A KG request confirmed with a Teams meeting; `fault` (status, Retry-After) makes Graph refuse
    this booking's first createOrGet once (scoped to its appointment: other tests run at once)."""
    event = s.booking.requested(KG, [window], area="釧路")
    if fault is not None:
        status, retry_after = fault
        await GRAPH.fault(
            "createOrGet",
            status,
            retry_after=retry_after,
            external_id=appointment_id(event.payload.booking_id, 1),
        )
    await s.booking.send(event)
    (confirmed,) = await s.probe.wait("appointment.confirmed", event.payload.booking_id)
    return event.payload.booking_id, confirmed.payload.appointment


async def _deleted(external_id: str) -> bool:
    meeting = await GRAPH.meeting(external_id)
    return bool(meeting and meeting.get("deleted"))


async def test_r16_kg_gets_a_teams_meeting_from_graph_with_the_person_held_in_the_lobby(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        bid, a = await _kg_confirmed(s)
    meeting = await GRAPH.meeting(appointment_id(bid, 1))
    assert meeting is not None and not meeting.get("deleted")
    assert a.meeting_url == meeting["joinWebUrl"] and a.meeting_url.startswith(f"{GRAPH_URL}/meet/")
    assert (
        meeting["subject"] == "オンライン相談（釧路行政監視行政相談センター）"
    )  # the office's, never the person's
    assert meeting["startDateTime"].startswith("2026-11-30T10:00:00") and "+09:00" in meeting["startDateTime"]
    assert meeting["endDateTime"].startswith("2026-11-30T10:30:00")
    assert meeting["lobbyBypassSettings"]["scope"] == "organizer"  # the counsellor admits the person
    assert meeting["allowedPresenters"] == "organizer"
    assert meeting["participants"]["organizer"]["upn"] == "kg-kushiro@kushiro-gyosei.example.org"
    assert a.counsellor_email == "kg-kushiro@kushiro-gyosei.example.org"
    assert a.meeting_id == meeting["joinMeetingIdSettings"]["joinMeetingId"]  # join by number too


async def test_r16_a_retried_creation_returns_the_same_meeting(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """Graph throttles once (429 with Retry-After): the message waits in a delay queue and the
    retry gets the meeting; createOrGet by appointment id never makes a second one."""
    async with scheduler(make_settings, amqp_url) as s:
        bid, a = await _kg_confirmed(s, fault=(429, 1))
        assert s.runtime.consumer.stats["retried"] >= 1
    mine = [m for m in await GRAPH.meetings() if m["externalId"] == appointment_id(bid, 1)]
    assert len(mine) == 1 and mine[0]["joinWebUrl"] == a.meeting_url


async def test_r16_graph_refusing_sends_the_request_to_staff_with_the_reason(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        event = s.booking.requested(KG, [MONDAY_10], area="釧路")
        await GRAPH.fault("createOrGet", 403, external_id=appointment_id(event.payload.booking_id, 1))
        await s.booking.send(event)
        (left,) = await s.probe.wait("appointment.left_to_staff", event.payload.booking_id)
        doc = await request_doc(s.client, event.payload.booking_id)
        assert await s.all_cells(event.payload.booking_id) == []  # the counsellor's slot is not held
    assert left.payload.reason == "meeting_refused"
    assert doc["status"] == "needs_staff"
    assert s.probe.of("appointment.confirmed", event.payload.booking_id) == []


async def test_r16_a_cancelled_consultation_deletes_its_meeting_and_a_move_replaces_it(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        moved, _ = await _kg_confirmed(s)
        later = {"counsellor_id": "kg-kushiro", "start": jst(2026, 11, 30, 14, 0).isoformat()}
        r = await s.client.post(f"/v1/staff/requests/{moved}/confirm", json=later, headers=STAFF)
        assert r.status_code == 200, r.text
        (_, v2) = await s.probe.wait("appointment.confirmed", moved, n=2)
        await eventually(lambda: _deleted(appointment_id(moved, 1)), what="the v1 meeting deleted")
        new = await GRAPH.meeting(appointment_id(moved, 2))
        assert (
            new is not None
            and not new.get("deleted")
            and new["joinWebUrl"] == v2.payload.appointment.meeting_url
        )
        assert new["startDateTime"].startswith("2026-11-30T14:00:00")

        cancelled, _ = await _kg_confirmed(s, (jst(2026, 12, 2, 10, 0), jst(2026, 12, 2, 10, 30)))
        await s.booking.send(s.booking.cancelled(KG, cancelled))
        await eventually(lambda: _deleted(appointment_id(cancelled, 1)), what="the cancelled meeting deleted")


async def test_r16_a_deletion_graph_could_not_take_is_retried_by_the_sweep(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        bid, _ = await _kg_confirmed(s)
        meeting = await GRAPH.meeting(appointment_id(bid, 1))
        assert meeting is not None
        await GRAPH.fault(f"onlineMeetings/{meeting['id']}", 503, method="DELETE", times=1)
        await s.booking.send(s.booking.cancelled(KG, bid))
        rooms = s.coordinator.ctx.rooms
        await eventually(lambda: rooms.pending.find_one({}), what="the deletion recorded as pending")
        assert not await _deleted(appointment_id(bid, 1))

        async def swept() -> bool:
            await rooms.retry_closes()  # what the sweep does each minute
            return await _deleted(appointment_id(bid, 1))

        await eventually(swept, what="the sweep deleting the meeting")
        assert (
            await rooms.pending.find_one({"_id": (await GRAPH.meeting(appointment_id(bid, 1)) or {})["id"]})
            is None
        )


async def test_r16_two_consultations_at_one_time_never_share_a_pre_issued_room(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """Two HW counsellors registered the same standing link: the second overlapping consultation
    finds the room in use, so staff coordinate it (R05) with that reason."""
    async with scheduler(make_settings, amqp_url) as s:
        await put_counsellor(s.client, HW, "hw-two", room=False)
        shared = await put_room(s.client, HW, "hw-one", "shared", "teleoffice")
        await s.client.delete(f"/v1/staff/offices/{HW}/counsellors/hw-one/rooms/hw-one-1", headers=STAFF)
        body = {"app": "teleoffice", "join_url": shared}
        r = await s.client.put(
            f"/v1/staff/offices/{HW}/counsellors/hw-two/rooms/shared", json=body, headers=STAFF
        )
        assert r.status_code == 201, r.text
        window = [(jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 9, 30))]
        first, second = s.booking.requested(HW, window), s.booking.requested(HW, window)
        await s.booking.send(first)
        (confirmed,) = await s.probe.wait("appointment.confirmed", first.payload.booking_id)
        held = {c["counsellor_id"] for c in await s.all_cells(first.payload.booking_id)}
        assert any(k.startswith("room:") for k in held)  # the room is claimed like a counsellor
        await s.booking.send(second)
        (left,) = await s.probe.wait("appointment.left_to_staff", second.payload.booking_id)
        assert await s.all_cells(second.payload.booking_id) == []  # nor is hw-two's slot held
    a = confirmed.payload.appointment
    assert a.meeting_url == shared and a.meeting_id == "123 456 789" and a.passcode == "pass1"
    assert left.payload.reason == "no_free_room"


async def test_r16_a_join_url_off_the_apps_hosts_is_refused_with_the_rule(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        path = f"/v1/staff/offices/{HW}/counsellors/hw-one/rooms/bad"
        for url, field in (("https://evil.example.net/r", "R16"), ("http://127.0.0.1:8443/r", "join_url")):
            r = await s.client.put(path, json={"app": "teleoffice", "join_url": url}, headers=STAFF)
            assert r.status_code == 422 and field in r.text, r.text


async def test_r08_the_meetings_attendance_records_the_person_as_joined(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    """At the 10-minute mark the scheduler asks Graph who joined: the person did at 10:03, so the
    booking hears `appointment.joined`, not a no-show; a meeting nobody joined is a no-show."""
    async with scheduler(make_settings, amqp_url) as s:
        present, _ = await _kg_confirmed(s)
        absent, _ = await _kg_confirmed(s, (jst(2026, 11, 30, 10, 0), jst(2026, 11, 30, 12, 0)))
        meeting = await GRAPH.meeting(appointment_id(present, 1))
        assert meeting is not None
        joined_at = jst(2026, 11, 30, 10, 3)
        await GRAPH.attendance(
            meeting["id"],
            [
                {
                    "role": "Organizer",
                    "displayName": "kg-kushiro",
                    "join": jst(2026, 11, 30, 9, 58).isoformat(),
                },
                {"role": "Attendee", "displayName": "相談者", "join": joined_at.isoformat(), "leave": None},
            ],
        )
        await s.advance_to(jst(2026, 11, 30, 10, 40) + timedelta(minutes=30))
        (joined,) = await s.probe.wait("appointment.joined", present)
        await s.probe.wait("appointment.no_show", absent)
        await s.quiet()
    assert joined.payload.at == joined_at and joined.payload.appointment_version == 1
    assert s.probe.of("appointment.no_show", present) == []


async def test_r16_prod_would_refuse_to_start_without_credentials_organisers_or_rooms(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        ctx = s.coordinator.ctx
        configured = GraphClients(scheduler_settings(make_settings), ctx.policies)
        assert await unready_rooms(ctx, configured) == []  # the harness's counsellors are complete
        await put_counsellor(s.client, KG, "kg-bare", areas=["釧路"], organizer=None)
        await put_counsellor(s.client, HW, "hw-bare", room=False)
        without = configured.settings.model_copy(update={"graph_credentials": {}})
        bare = GraphClients(without, ctx.policies)
        problems = await unready_rooms(ctx, bare)
    assert sorted(problems) == [
        "demo-town: no Graph credentials (GRAPH_CREDENTIALS or GRAPH_CERTIFICATES)",
        "hw-bare: no teleoffice room registered",
        "kg-bare: no Teams organiser",
        "kushiro-gyosei: no Graph credentials (GRAPH_CREDENTIALS or GRAPH_CERTIFICATES)",
    ]


async def test_r16_the_graph_token_is_fetched_once_and_reused_until_it_expires(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        for day in (2, 3, 4):
            await _kg_confirmed(s, (jst(2026, 12, day, 10, 0), jst(2026, 12, day, 10, 30)))
        client = s.coordinator.ctx.rooms.graph(KG)
        assert client is not None and client.token_requests == 1  # msal's cache answered the rest
