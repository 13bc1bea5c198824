"""The console's operations page against the real broker, FerretDB and the booking service (served by
uvicorn in-process): a message booking cannot read is parked for real, the page counts it from the
management API as the console's own `console-monitor` user (monitoring tag, read on parking only),
shows its reason with the body sealed, and after a confirmation booking replays it into its inbox;
a person without the role operator is refused, in the console and in booking."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aio_pika
import aiormq.exceptions
import httpx
import pytest

from deploy import rabbitmq_users
from services.booking.app import create_app
from services.booking.config import Settings as BookingSettings
from shared import parking, topology
from shared.clock import FixedClock
from shared.store.keys import Holder
from tests import support
from tests.support import eventually, uvicorn_serving
from tests.support.booking import KG, NOW, PORTAL_KEY, STAFF_KEY, parked, publish
from tests.support.console import RunningConsole, add_account, csrf_of, running_console, sign_in
from tests.support.scheduler import probe

CONSOLE_KEY = "csk_test-console-ops-key-0123456789abcdefghijklmnopq"
OPERATOR, STAFF = "ops.tanaka", "sato.jiro"


@dataclass
class Ops:
    console: RunningConsole
    booking_url: str
    amqp_url: str
    monitor: tuple[str, str]  # the console-monitor user's name and password


async def _monitor_user(vhost: str, tmp_path: Any) -> tuple[str, dict[str, str], str]:
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    passwords = rabbitmq_users.local_passwords(tmp_path / "secrets")
    await asyncio.to_thread(
        rabbitmq_users.apply, support.RABBITMQ_API, vhost, passwords, prefix=prefix, with_topology=False
    )
    return prefix, passwords, prefix + rabbitmq_users.CONSOLE_MONITOR


@pytest.fixture
async def ops(make_settings: Callable[..., Any], amqp_url: str, tmp_path: Any) -> AsyncIterator[Ops]:
    settings = make_settings(BookingSettings, dev_portal_key=PORTAL_KEY, dev_staff_key=STAFF_KEY)
    app = create_app(settings, FixedClock(NOW))
    prefix, passwords, monitor = await _monitor_user(support.vhost_of(amqp_url), tmp_path)
    try:
        async with uvicorn_serving(app) as url:
            store = app.state.service.stores.credentials
            console_key = Holder(roles=["staff", "operator"], delegates=True)
            await store.register(CONSOLE_KEY, "staff", "dev-console", ["*"], NOW, holder=console_key)
            async with running_console(
                make_settings,
                booking_url=url,
                console_booking_key=CONSOLE_KEY,
                rabbitmq_management_url=support.RABBITMQ_API,
                rabbitmq_monitor_user=monitor,
                rabbitmq_monitor_password=passwords[rabbitmq_users.CONSOLE_MONITOR],
            ) as c:
                await add_account(c.console, OPERATOR, ["operator"], name="田中 運用")
                await add_account(c.console, STAFF, ["staff"], [KG], name="佐藤 次郎")
                yield Ops(c, url, amqp_url, (monitor, passwords[rabbitmq_users.CONSOLE_MONITOR]))
    finally:
        names = [prefix + r for r in rabbitmq_users.roles()]
        await asyncio.to_thread(rabbitmq_users.delete_users, support.RABBITMQ_API, names)


async def _park_a_bad_message(amqp_url: str) -> None:
    """Booking listens to scheduler.slot_assigned; bytes that are no event are parked (invalid-event)."""
    key = topology.BOOKING.events[0]
    await publish(amqp_url, b"\xff not json", key, exchange=topology.EVENTS)


async def _parked_shown(http: httpx.AsyncClient, n: int) -> str:
    """The page once the management API's figures (refreshed every few seconds) show `n` parked."""

    async def page() -> str:
        r = await http.get("/ops")
        assert r.status_code == 200, r.text
        return r.text if f'data-parked="booking">{n}<' in r.text else ""

    return await eventually(page, timeout=30, interval=0.5, what=f"booking.parking counted {n} on /ops")


async def test_an_operator_sees_the_parked_message_and_replays_it_after_a_confirmation(ops: Ops) -> None:
    http = ops.console.http
    await _park_a_bad_message(ops.amqp_url)
    assert (await sign_in(http, OPERATOR)).status_code == 303
    page = await _parked_shown(http, 1)
    assert "booking.inbox" in page and "notifier.parking" in page

    # the reason, on request; booking sealed the parked copy (R12): its body is never shown
    r = await http.post("/ops/booking/peek", data={"csrf": csrf_of(page)})
    assert r.status_code == 200, r.text
    assert "読み取れないイベント（invalid-event）" in r.text and "封印済み" in r.text
    assert "not json" not in r.text

    confirm = await http.get("/ops/booking/replay")
    assert confirm.status_code == 200 and "1 件を再投入する" in confirm.text
    async with probe(ops.amqp_url, "access.logged") as seen:
        r = await http.post("/ops/booking/replay", data={"csrf": csrf_of(confirm.text), "limit": "1"})
        assert r.status_code == 303, r.text[r.text.find("<main") :][:1500]
        assert r.headers["location"] == "/ops?done=replayed&moved=1"

        wanted = {
            ("console", OPERATOR, "/ops/{service}/replay", 303),  # the console's record of the action
            ("booking", OPERATOR, "/v1/ops/parked/replay", 200),  # booking's own, naming the person
        }

        async def recorded() -> bool:
            got = {
                (e.payload.service, e.payload.actor, e.payload.route, e.payload.status) for e in seen.events
            }
            return wanted <= got

        await eventually(recorded, timeout=15, what=f"R10 access records {wanted}")

    # it left parking, went through booking's inbox and consumer (still unreadable, so booking parked
    # it again: the new copy says where it was replayed from)
    async def parked_again() -> list[Any]:
        return [
            m
            for m in await parked(ops.amqp_url)
            if (m.headers or {}).get(parking.REPLAYED_HEADER) == topology.BOOKING.parking
        ]

    again = await eventually(parked_again, timeout=15, what="the replayed message parked again by booking")
    assert len(again) == 1 and again[0].headers[topology.REASON_HEADER] == "invalid-event"


async def test_a_person_without_the_role_operator_is_refused(ops: Ops) -> None:
    http = ops.console.http
    assert (await sign_in(http, STAFF)).status_code == 303
    assert (await http.get("/ops")).status_code == 403
    assert (await http.get("/ops/booking/replay")).status_code == 403
    today = await http.get(f"/offices/{KG}/today")
    r = await http.post("/ops/booking/replay", data={"csrf": csrf_of(today.text), "limit": "1"})
    assert r.status_code == 403
    assert 'href="/ops"' not in today.text  # no link to a page the person may not open
    # booking refuses the console acting for a person without the role (the console cannot lift it)
    headers = {
        "Authorization": f"Bearer {CONSOLE_KEY}",
        "X-Acting-Person": STAFF,
        "X-Acting-Roles": "staff",
        "X-Acting-Offices": KG,
    }
    async with httpx.AsyncClient(base_url=ops.booking_url, trust_env=False) as booking:
        r = await booking.post("/v1/ops/parked/replay", json={"limit": 1}, headers=headers)
        assert r.status_code == 403 and "operator" in r.text
        plain = {"Authorization": f"Bearer {STAFF_KEY}"}  # a staff key without the role
        r = await booking.post("/v1/ops/parked/replay", json={"limit": 1}, headers=plain)
        assert r.status_code == 403


async def test_r12_the_console_monitor_user_reads_the_queues_and_may_not_publish(ops: Ops) -> None:
    user, password = ops.monitor
    vhost = support.vhost_of(ops.amqp_url)
    api = str(httpx.URL(support.RABBITMQ_API).copy_with(username=user, password=password))
    async with httpx.AsyncClient(trust_env=False) as c:
        listed = await c.get(f"{api}/queues/{quote(vhost, safe='')}")
        assert listed.status_code == 200 and topology.BOOKING.parking in {q["name"] for q in listed.json()}
    conn = await aio_pika.connect(rabbitmq_users.amqp_url(support.AMQP_URL, user, password, vhost))
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        redeliver = await ch.get_exchange(topology.REDELIVER)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await redeliver.publish(aio_pika.Message(b"x"), routing_key=topology.BOOKING.inbox)
