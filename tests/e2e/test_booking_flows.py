"""Booking as the portals and the job-seeker system use it: the four services as real processes, the
system clock, dates chosen through the office calendar."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from pymongo import AsyncMongoClient

from examples import forms
from services.booking.config import Settings
from shared import topology
from shared.calendar import OfficeCalendar, jst_date
from shared.clock import JST, SystemClock
from shared.commands import booking_id_for
from shared.policy import OfficePolicy, load_file
from tests import support
from tests.support import Mailpit, eventually
from tests.support.booking import publish, tap
from tests.support.scheduler import DEMO_OFFICES
from tests.support.stack import BOOKING_STAFF_KEY, PORTAL_KEY, Stack, parked_body

KG, HW, DEMO = "kushiro-gyosei", "kohoku-hellowork", "demo-town"
PORTAL = {"Authorization": f"Bearer {PORTAL_KEY}"}
STAFF = {"Authorization": f"Bearer {BOOKING_STAFF_KEY}"}


def policy(office: str) -> OfficePolicy:
    return Settings().policies()[office]


def now() -> datetime:
    return SystemClock().now()


def kg_day() -> date:
    """An open day from tomorrow on (a window tomorrow is always still ahead)."""
    return OfficeCalendar(policy(KG)).first_bookable(now() + timedelta(days=1))


async def register_jobseeker(stack: Stack, number: str, phone: str, email: str) -> None:
    msg = forms.jobseeker_message(HW, number, phone, email, sent_at=now())
    await publish(stack.amqp_url, msg, msg["type"])


async def test_r01_r03_r04_kg_and_hw_bookings_are_taken_and_refusals_name_their_rule(stack: Stack) -> None:
    hw_cal = OfficeCalendar(policy(HW))
    number = f"12345-{uuid.uuid4().int % 10**8:08d}"
    await register_jobseeker(stack, number, "090-5555-6666", "e2e@mypage.example.jp")
    async with stack.client("booking", headers=PORTAL) as booking:
        kg = await booking.post(f"/v1/offices/{KG}/bookings", json=forms.kg_form(policy(KG), kg_day(), now()))
        assert kg.status_code == 202, kg.text

        hw_body = forms.hw_form(
            policy(HW),
            hw_cal.first_bookable(now()),
            now(),
            jobseeker_number=number,
            phone="090-5555-6666",
            window=("09:00", "17:00"),
        )

        async def hw_taken() -> httpx.Response | None:  # the registry is fed asynchronously
            r = await booking.post(f"/v1/offices/{HW}/bookings", json=hw_body)
            return r if r.status_code == 202 else None

        await eventually(hw_taken, what="HW booking once the job seeker is registered")

        too_long = await booking.post(
            f"/v1/offices/{KG}/bookings",
            json=forms.kg_form(policy(KG), kg_day(), now(), duration_minutes=45),
        )
        assert (too_long.status_code, too_long.json()["rule"]) == (409, "R01")
        next_open = jst_date(now()) + timedelta(days=1)
        while not hw_cal.is_open(next_open):
            next_open += timedelta(days=1)
        if next_open < hw_cal.first_bookable(now()):  # an open day whose R04 deadline has passed
            late = await booking.post(
                f"/v1/offices/{HW}/bookings",
                json={
                    **hw_body,
                    "windows": [{"start": forms.at(next_open, "10:00"), "end": forms.at(next_open, "11:00")}],
                },
            )
            assert (late.status_code, late.json()["rule"]) == (409, "R04")

        async def coordinated() -> dict[str, Any] | None:
            view = (await booking.get(f"/v1/bookings/{kg.json()['booking_id']}")).json()
            return view if view["status"] != "requested" else None

        view = await eventually(coordinated, timeout=30, what="the scheduler coordinated the KG booking")
        assert view["status"] in ("confirmed", "recoordination_proposed", "awaiting_coordination")
        if view["status"] == "confirmed":
            assert view["appointment"]["meeting_url"].startswith("https://")


async def test_r17_amqp_intake_answers_parks_and_rejects(stack: Stack) -> None:
    key, bad_key = f"e2e-{uuid.uuid4().hex}", f"e2e-{uuid.uuid4().hex}"
    async with tap(stack.amqp_url) as events:
        good = forms.booking_command(
            "dev-portal", KG, key, forms.kg_form(policy(KG), kg_day(), now()), sent_at=now()
        )
        bad = forms.booking_command(
            "dev-portal",
            KG,
            bad_key,
            forms.kg_form(policy(KG), kg_day(), now(), terms_version="2020-01-01"),
            sent_at=now(),
        )
        await publish(stack.amqp_url, good, "booking.request")
        await publish(stack.amqp_url, bad, "booking.request")
        marker = uuid.uuid4().hex
        await publish(stack.amqp_url, f"not json {marker}".encode(), "booking.request")
        [rejected] = await events.wait("booking.rejected", timeout=20, request_id=bad_key)
    assert rejected["payload"]["rule"] == "R17"
    async with stack.client("booking", headers=PORTAL) as booking:

        async def answered() -> dict[str, Any] | None:
            r = await booking.get(f"/v1/requests/{key}")
            return r.json() if r.status_code == 200 and r.json()["state"] == "done" else None

        answer = await eventually(answered, what="the AMQP request's answer")
        assert answer["status"] == 202
        assert answer["answer"]["booking_id"] == booking_id_for("dev-portal", key)
        assert (await booking.get(f"/v1/bookings/{booking_id_for('dev-portal', key)}")).status_code == 200

    async def parked() -> list[dict[str, Any]]:
        vhost = quote(stack.amqp_url.rsplit("/", 1)[1], safe="")
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(
                f"{support.RABBITMQ_API}/queues/{vhost}/{topology.BOOKING.parking}/get",
                json={"count": 100, "ackmode": "reject_requeue_true", "encoding": "auto"},
            )
        return [m for m in r.json() if marker.encode() in parked_body(topology.BOOKING.parking, m)]

    [message] = await eventually(parked, what="the unreadable command parked")
    assert message["properties"]["headers"][topology.REASON_HEADER] == "invalid-event"


async def test_r12_twenty_parallel_requests_with_one_key_make_one_booking_sealed_at_rest(
    stack: Stack,
) -> None:
    body = forms.kg_form(policy(KG), kg_day(), now())
    headers = {**PORTAL, "Idempotency-Key": f"e2e-par-{uuid.uuid4().hex}"}
    async with stack.client("booking", headers=headers) as booking:
        answers = await asyncio.gather(
            *(booking.post(f"/v1/offices/{KG}/bookings", json=body) for _ in range(20))
        )
        other = await booking.post(f"/v1/offices/{KG}/bookings", json={**body, "duration_minutes": 15})
    assert [r.status_code for r in answers] == [202] * 20
    assert len({json.dumps(r.json(), sort_keys=True) for r in answers}) == 1
    assert (other.status_code, other.json()["error"]) == (409, "idempotency-key-reused")
    booking_id = answers[0].json()["booking_id"]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(support.MONGODB_URL)
    try:
        first_versions = client[f"{stack.db_prefix}booking"]["booking_changes"]
        assert await first_versions.count_documents({"aggregate_id": booking_id, "version": 1}) == 1
        stored = json.dumps(
            await first_versions.find_one({"aggregate_id": booking_id}), default=str, ensure_ascii=False
        )
        for plain in (body["name"], body["email"], "+81154221234", "幸町"):
            assert plain not in stored  # R12: sealed per field at rest
    finally:
        await client.close()


async def test_r07_a_portal_is_told_to_phone_and_staff_record_the_call(stack: Stack) -> None:
    async with stack.client("booking", headers=PORTAL) as portal:
        r = await portal.post(f"/v1/offices/{HW}/bookings", json={})
        assert r.status_code == 422
        r = await portal.post(f"/v1/offices/{KG}/bookings", json=forms.kg_form(policy(KG), kg_day(), now()))
        booking_id = r.json()["booking_id"]
        refused = await portal.post(f"/v1/bookings/{booking_id}/cancellations", json={"channel": "portal"})
    assert (refused.status_code, refused.json()["rule"]) == (409, "R07")
    assert policy(KG).phone in refused.json()["how_to_cancel"]
    async with stack.client("booking", headers=STAFF) as staff:
        r = await staff.post(
            f"/v1/bookings/{booking_id}/cancellations", json={"channel": "phone", "recorded_by": "e2e"}
        )
    assert r.json()["status"] == "cancelled"


async def test_r05_a_declined_proposal_is_coordinated_again_with_the_persons_new_windows(
    stack: Stack,
) -> None:
    """KG 第4条(2) 改めて日程調整 through the running services, in the demo office (a 1-minute grid
    open all day): the wished time is taken, the person declines the times offered instead, is told
    the office coordinates again and that new wished times may be sent through the portal, sends
    them, and is confirmed in them."""
    demo, rnd = load_file(DEMO_OFFICES / f"{DEMO}.yaml"), uuid.uuid4().int
    day = jst_date(now()) + timedelta(days=20 + rnd % 100)
    start = datetime.combine(day, time(1 + rnd % 20, rnd % 60), JST)  # a time no other test takes

    def form(begin: datetime, minutes: int) -> dict[str, Any]:
        window = (f"{begin:%H:%M}", f"{begin + timedelta(minutes=minutes):%H:%M}")
        return forms.kg_form(demo, day, now(), window=window)

    async with stack.client("booking", headers=PORTAL) as booking:

        async def status_of(booking_id: str, status: str) -> dict[str, Any] | None:
            view = (await booking.get(f"/v1/bookings/{booking_id}")).json()
            return view if view["status"] == status else None

        async def becomes(booking_id: str, status: str) -> dict[str, Any]:
            found = await eventually(lambda: status_of(booking_id, status), timeout=30, what=status)
            assert found is not None
            return found

        first = (await booking.post(f"/v1/offices/{DEMO}/bookings", json=form(start, 30))).json()
        await becomes(first["booking_id"], "confirmed")  # the one counsellor of 釧路 is taken then
        body = form(start, 30)
        bid = (await booking.post(f"/v1/offices/{DEMO}/bookings", json=body)).json()["booking_id"]
        await becomes(bid, "recoordination_proposed")
        declined = await booking.post(f"/v1/bookings/{bid}/alternatives/decline")
        assert declined.json()["status"] == "awaiting_coordination", declined.text  # or the hold lapsed

        mailpit = Mailpit()

        async def arranging() -> list[dict[str, Any]]:  # not the proposal's 実施日時の再調整のお願い
            return [m for m in await mailpit.to(body["email"]) if "実施日時の調整" in m["Subject"]]

        [told] = await eventually(arranging, timeout=30, what="the 'we are arranging a time' email")
        text = (await mailpit.message(told["ID"]))["Text"]
        assert "お申込みいただいたウェブサイトから新しいご希望の日時をお送りいただけます" in text

        later = start + timedelta(hours=1)
        new = forms.windows_form((day, f"{later:%H:%M}", f"{later + timedelta(minutes=45):%H:%M}"))
        r = await booking.post(f"/v1/bookings/{bid}/windows", json=new)
        assert (r.status_code, r.json()["status"]) == (200, "requested"), r.text
        view = await becomes(bid, "confirmed")
    assert datetime.fromisoformat(view["appointment"]["start"]) == later
