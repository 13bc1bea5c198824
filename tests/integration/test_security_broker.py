"""R12 least privilege on the broker: each user does its job and nothing more (real RabbitMQ).

Every test applies the users of deploy/rabbitmq_users.py to its own fresh vhost, with user names
prefixed so they never touch the real `booking`, `portal`, ... users, and deletes them afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import aio_pika
import aiormq.exceptions
import httpx
import pytest

from deploy import rabbitmq_users
from examples import records
from ops import broker_cli
from shared import topology
from shared.events import Envelope, MessageError
from shared.messaging import TransientError
from shared.runtime import Runtime
from shared.settings import ServiceSettings
from tests import support
from tests.support import eventually

Refused = aiormq.exceptions.ChannelAccessRefused
PORTALS = ("kg-portal", "hw-portal")  # each portal its own user (issue 14)
PORTAL = topology.portal_user("kg-portal")


@dataclass
class Users:
    vhost: str
    prefix: str
    passwords: dict[str, str]

    def url(self, role: str) -> str:
        user = self.prefix + role
        return rabbitmq_users.amqp_url(support.AMQP_URL, user, self.passwords[role], self.vhost)

    def api(self, role: str) -> str:
        u = httpx.URL(support.RABBITMQ_API)
        return str(u.copy_with(username=self.prefix + role, password=self.passwords[role]))


async def _users(amqp_url: str, tmp_path: Any, *, with_topology: bool) -> AsyncIterator[Users]:
    vhost = unquote(amqp_url.rstrip("/").rsplit("/", 1)[1])
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    passwords = rabbitmq_users.local_passwords(tmp_path / "secrets", rabbitmq_users.roles(PORTALS))
    await asyncio.to_thread(
        rabbitmq_users.apply,
        support.RABBITMQ_API,
        vhost,
        passwords,
        prefix=prefix,
        with_topology=with_topology,
        portals=PORTALS,
    )
    try:
        yield Users(vhost, prefix, passwords)
    finally:
        names = [prefix + r for r in rabbitmq_users.roles(PORTALS)]
        await asyncio.to_thread(rabbitmq_users.delete_users, support.RABBITMQ_API, names)


@pytest.fixture
async def users(amqp_url: str, tmp_path: Any) -> AsyncIterator[Users]:
    """Users applied together with the whole topology, as `make infra-up` / compose would."""
    async for u in _users(amqp_url, tmp_path, with_topology=True):
        yield u


@pytest.fixture
async def bare_users(amqp_url: str, tmp_path: Any) -> AsyncIterator[Users]:
    """Users only: the vhost has no queue until a service declares its own."""
    async for u in _users(amqp_url, tmp_path, with_topology=False):
        yield u


def _key(q: topology.ServiceQueues) -> str:
    """A routing key on consult.events that reaches this service's inbox."""
    return next((k for k in q.events if "*" not in k and "#" not in k), "access.logged")


def _probe(runtime: Runtime, request_id: str) -> Envelope[Any]:
    payload = records.access_logged(
        at=runtime.clock.now(), request_id=request_id, service="probe", method="GET", route="/", status=200
    )
    return runtime.event(payload, "office-x")


#: the services with an inbox (the console consumes nothing: its own test is below)
CONSUMERS = [name for name, q in topology.SERVICES.items() if q.events]


@pytest.mark.parametrize("service", CONSUMERS)
async def test_r12_service_user_declares_its_topology_consumes_publishes_retries_and_parks(
    service: str, bare_users: Users, amqp_url: str, make_settings: Callable[..., ServiceSettings]
) -> None:
    q = topology.SERVICES[service]
    admin = await aio_pika.connect(amqp_url)  # the shared exchanges, as the definitions create them
    async with admin:
        await topology.declare_exchanges(await admin.channel())
    runtime = Runtime(make_settings(ServiceSettings, amqp_url=bare_users.url(service)), q)
    attempts: Counter[str] = Counter()

    @runtime.consumer.on_any()
    async def handle(event: Envelope[Any]) -> None:
        rid = event.payload.request_id
        attempts[rid] += 1
        if rid == "poison":
            raise MessageError("probe", "cannot be handled")
        if attempts[rid] == 1:
            raise TransientError("first attempt fails")

    async with runtime.running():  # checks the exchanges passively, declares its queues and bindings
        for rid in ("retry-me", "poison"):
            body = _probe(runtime, rid).to_json()
            await runtime.publisher.publish_raw(
                body, exchange=topology.EVENTS, routing_key=_key(q), headers={}
            )
        stats = runtime.consumer.stats
        await eventually(lambda: _true(stats["handled"] == 1 and stats["parked"] == 1), what="retry and park")
    assert attempts == {"retry-me": 2, "poison": 1}
    assert stats["retried"] == 1  # consult.retry -> <svc>.delay.1s -> consult.redeliver -> inbox


async def test_r12_the_consoles_user_publishes_its_access_records_and_reads_no_inbox(
    bare_users: Users, amqp_url: str, make_settings: Callable[..., ServiceSettings]
) -> None:
    admin = await aio_pika.connect(amqp_url)
    async with admin:
        channel = await admin.channel()
        await topology.declare_exchanges(channel)
        audit = await channel.declare_queue(topology.AUDIT.inbox, durable=True)  # where audit reads them
        await audit.bind(topology.EVENTS, "access.logged")
        runtime = Runtime(
            make_settings(ServiceSettings, amqp_url=bare_users.url("console")), topology.CONSOLE
        )
        async with runtime.running():
            await runtime.publisher.publish(_probe(runtime, "console-probe"))
        message = await audit.get(timeout=10, fail=True)
        assert message is not None and b"console-probe" in message.body
        await message.ack()
    assert "ACCESS_REFUSED" in await _refused(
        bare_users.url("console"), lambda ch: _get(ch, topology.AUDIT.inbox)
    )


async def _true(value: bool) -> bool:
    return value


async def _refused(url: str, action: Callable[[aio_pika.abc.AbstractChannel], Any]) -> str:
    """Run an action on a fresh channel of this user; return the broker's refusal text."""
    conn = await aio_pika.connect(url)
    async with conn:
        channel = await conn.channel()
        with pytest.raises(Refused) as info:
            await action(channel)
    return str(info.value)


async def _get(channel: aio_pika.abc.AbstractChannel, queue: str) -> Any:
    return await (await channel.get_queue(queue)).get(fail=False)


async def _publish(
    channel: aio_pika.abc.AbstractChannel, exchange: str, key: str, body: bytes = b"{}"
) -> None:
    ex = channel.default_exchange if exchange == "" else await channel.get_exchange(exchange)
    await ex.publish(aio_pika.Message(body), routing_key=key, mandatory=False)


async def _depth(users: Users, queue: str) -> int:
    """Ready messages, by a passive declare as the admin (the management API's counts lag)."""
    conn = await aio_pika.connect(support.vhost_url(users.vhost))
    async with conn:
        q = await (await conn.channel()).get_queue(queue)
        return int(q.declaration_result.message_count or 0)


async def _depth_is(users: Users, queue: str, n: int) -> bool:
    return await _depth(users, queue) == n


async def test_r12_notifier_cannot_read_booking_inbox(users: Users) -> None:
    why = await _refused(users.url("notifier"), lambda ch: _get(ch, "booking.inbox"))
    assert "booking.inbox" in why
    conn = await aio_pika.connect(users.url("notifier"))
    async with conn:  # its own inbox it may read
        assert await _get(await conn.channel(), "notifier.inbox") is None


async def test_r12_notifier_cannot_publish_to_intake_nor_eavesdrop_on_it(users: Users) -> None:
    url = users.url("notifier")
    assert "consult.intake" in await _refused(
        url, lambda ch: _publish(ch, topology.INTAKE, "booking.request")
    )
    bind = lambda ch: _bind(ch, "notifier.inbox", topology.INTAKE, "#")  # noqa: E731
    assert "consult.intake" in await _refused(url, bind)
    assert await _depth(users, "booking.inbox") == 0


async def _bind(channel: aio_pika.abc.AbstractChannel, queue: str, exchange: str, key: str) -> None:
    await (await channel.get_queue(queue)).bind(exchange, routing_key=key)


async def test_r12_a_service_cannot_delete_purge_or_redeclare_other_queues_nor_shared_exchanges(
    users: Users,
) -> None:
    url = users.url("notifier")

    async def delete(ch: aio_pika.abc.AbstractChannel) -> None:
        await (await ch.get_queue("booking.inbox")).delete(if_unused=False, if_empty=False)

    async def purge(ch: aio_pika.abc.AbstractChannel) -> None:
        await (await ch.get_queue("booking.parking")).purge()

    async def declare(ch: aio_pika.abc.AbstractChannel) -> None:
        await ch.declare_queue("booking.sneaky", durable=True)

    async def redeclare_exchange(ch: aio_pika.abc.AbstractChannel) -> None:
        await ch.declare_exchange(topology.EVENTS, aio_pika.ExchangeType.TOPIC, durable=True)

    for action in (delete, purge, declare, redeclare_exchange):  # no configure on shared exchanges
        await _refused(url, action)


async def test_r12_portal_publishes_intake_commands_and_nothing_else(users: Users) -> None:
    url = users.url(PORTAL)
    conn = await aio_pika.connect(url)
    async with conn:
        await _publish(await conn.channel(), topology.INTAKE, "booking.request", b'{"probe": 1}')
    await eventually(lambda: _depth_is(users, "booking.inbox", 1), what="the command reached booking.inbox")

    assert "consult.events" in await _refused(
        url, lambda ch: _publish(ch, topology.EVENTS, "booking.confirmed")
    )
    # the default exchange would deliver straight into any queue by name
    await _refused(url, lambda ch: _publish(ch, "", "notifier.inbox"))
    # topic authorisation: only the routing keys the services take from the intake
    assert "booking.cancelled" in await _refused(
        url, lambda ch: _publish(ch, topology.INTAKE, "booking.cancelled")
    )
    await _refused(url, lambda ch: ch.declare_queue("portal.replies", durable=True))
    assert await _depth(users, "notifier.inbox") == 0


async def test_r12_a_portal_cannot_claim_another_portals_user_id(users: Users) -> None:
    """Issue 14: booking trusts the AMQP user_id because RabbitMQ refuses one that is not the login."""
    me, other = users.prefix + PORTAL, users.prefix + topology.portal_user("hw-portal")
    conn = await aio_pika.connect(users.url(PORTAL))
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange(topology.INTAKE, ensure=False)
        await ex.publish(aio_pika.Message(b'{"mine": 1}', user_id=me), routing_key="booking.request")
        with pytest.raises(aiormq.exceptions.AMQPError) as info:
            await ex.publish(aio_pika.Message(b'{"theirs": 1}', user_id=other), routing_key="booking.request")
            await ch.get_exchange(topology.INTAKE, ensure=True)  # the refusal closes the channel
    assert "user_id" in str(info.value), info.value
    await eventually(lambda: _depth_is(users, "booking.inbox", 1), what="only the portal's own command")
    assert await _depth(users, "booking.inbox") == 1


async def test_r12_portal_cannot_read_any_queue(users: Users) -> None:
    names = [q for svc in topology.SERVICES.values() for q in rabbitmq_users.record(svc).queues]
    assert {"booking.inbox", "notifier.parking", "audit.delay.1s"} <= set(names)
    for name in names:
        await _refused(users.url(PORTAL), lambda ch, name=name: _get(ch, name))  # type: ignore[misc]


async def test_r12_ops_user_replays_parked_messages_but_reads_no_inbox(users: Users) -> None:
    guest = support.vhost_url(users.vhost)
    conn = await aio_pika.connect(guest)
    async with conn:
        await _publish(await conn.channel(), topology.DEAD, "booking.parking", b'{"parked": 1}')
    await eventually(lambda: _depth_is(users, "booking.parking", 1), what="a parked message")

    ops = broker_cli.OpsSettings(amqp_url=users.url("ops"), rabbitmq_management_url=users.api("ops"))
    assert await broker_cli._replay(ops, topology.BOOKING, 0) == 1  # consultctl dlq replay
    await eventually(lambda: _depth_is(users, "booking.inbox", 1), what="the message back in booking.inbox")

    await _refused(users.url("ops"), lambda ch: _get(ch, "booking.inbox"))
    await _refused(users.url("ops"), lambda ch: _publish(ch, topology.EVENTS, "booking.confirmed"))
    async with httpx.AsyncClient(timeout=10) as c:  # consultctl queues reads the management API
        r = await c.get(f"{users.api('ops').rstrip('/')}/queues/{quote(users.vhost, safe='')}")
        assert r.status_code == 200 and {q["name"] for q in r.json()} >= {"booking.inbox"}
        peek = {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"}
        api = f"{users.api('ops').rstrip('/')}/queues/{quote(users.vhost, safe='')}"
        r = await c.post(f"{api}/booking.parking/get", json=peek)  # consultctl dlq show
        assert r.status_code == 200
        r = await c.post(f"{api}/booking.inbox/get", json=peek)
        assert r.status_code in (401, 403)  # an inbox holds live personal data: not for ops
        r = await c.get(f"{users.api('booking').rstrip('/')}/overview")
        assert r.status_code == 401  # service users have no management access


async def test_r12_a_wrong_password_is_refused(users: Users) -> None:
    url = rabbitmq_users.amqp_url(support.AMQP_URL, users.prefix + "booking", "not-the-password", users.vhost)
    conn = aio_pika.Connection(url)
    try:
        with pytest.raises(aio_pika.exceptions.AMQPConnectionError):
            await conn.connect(timeout=5)
    finally:
        await conn.close()


async def test_r12_applying_again_takes_back_a_widened_permission(users: Users) -> None:
    user, vhost = users.prefix + "notifier", quote(users.vhost, safe="")
    async with httpx.AsyncClient(timeout=10) as c:
        wide = {"configure": ".*", "write": ".*", "read": ".*"}
        r = await c.put(f"{support.RABBITMQ_API}/permissions/{vhost}/{user}", json=wide)
        r.raise_for_status()
    await asyncio.to_thread(
        rabbitmq_users.apply, support.RABBITMQ_API, users.vhost, users.passwords, prefix=users.prefix
    )
    await _refused(users.url("notifier"), lambda ch: _get(ch, "booking.inbox"))


async def test_apply_drops_the_empty_classic_retry_queues_the_delay_queues_replaced(
    amqp_url: str, tmp_path: Any
) -> None:
    """Brokers set up before the quorum `<svc>.delay.<n>s` queues keep classic `<svc>.retry.<n>s` ones:
    an apply removes them once empty and leaves one still holding a message."""
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        ch = await conn.channel()
        await ch.declare_queue("booking.retry.1s", durable=True)
        held = await ch.declare_queue("notifier.retry.5s", durable=True)
        await ch.default_exchange.publish(aio_pika.Message(b"waiting"), routing_key=held.name)
    async for u in _users(amqp_url, tmp_path, with_topology=True):
        conn = await aio_pika.connect(support.vhost_url(u.vhost))
        async with conn:
            ch = await conn.channel()
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await ch.declare_queue("booking.retry.1s", passive=True)
        conn = await aio_pika.connect(support.vhost_url(u.vhost))
        async with conn:
            ch = await conn.channel()
            left = await ch.declare_queue("notifier.retry.5s", passive=True)
            assert left.declaration_result.message_count == 1
