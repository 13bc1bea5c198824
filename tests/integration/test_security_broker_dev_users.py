"""`make up` runs each service as its own RabbitMQ user (deploy/processes.py, R12).

Against the shared local broker: `with_broker_users` applies the users to vhost `/` exactly as
`make infra-up` does (idempotent; passwords in .local/secrets) and hands each service a URL with its
own user. The URL logs in, and what it may do is the service's grant, not guest's: booking may
not read the notifier's inbox. URLs that are not the local default are left alone.
"""

from __future__ import annotations

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from deploy import processes
from deploy.processes import Service, local_guest, with_broker_users
from shared import topology

DEFAULT = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.mark.parametrize(
    ("url", "local"),
    [
        (DEFAULT, True),
        ("amqp://guest:guest@localhost/", True),
        ("amqp://guest:guest@127.0.0.1:5672/other", False),  # users are applied to vhost / only
        ("amqp://booking:pw@127.0.0.1:5672/", False),  # a user of your own
        ("amqps://guest:guest@127.0.0.1:5671/", False),
        ("amqp://guest:guest@rabbitmq.example:5672/", False),
    ],
)
def test_only_the_local_default_url_is_replaced(url: str, local: bool) -> None:
    assert local_guest(url) is local


def test_broker_users_guest_keeps_guest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_USERS", "guest")
    services = [Service("booking", 8001, "127.0.0.1", amqp_url=DEFAULT)]
    assert with_broker_users(services) == services


async def test_each_service_gets_its_own_least_privilege_user(
    servers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BROKER_USERS", raising=False)
    mine = "amqp://guest:guest@127.0.0.1:5672/elsewhere"
    services = [Service(n, 0, "127.0.0.1", amqp_url=DEFAULT) for n in topology.SERVICES]
    services.append(Service("custom", 0, "127.0.0.1", amqp_url=mine))
    done = {s.name: s for s in with_broker_users(services)}
    assert done["custom"].broker_url == ""  # left alone
    for name in topology.SERVICES:
        assert done[name].broker_url.startswith(f"amqp://{name}:"), done[name]
        assert processes.SECRETS.joinpath(f"rabbitmq-{name}.password").exists()

    conn = await aio_pika.connect(done["booking"].broker_url)
    async with conn:
        ch = await conn.channel()
        await ch.get_queue(topology.BOOKING.inbox)  # logged in as booking; its inbox is there
        # (no basic.get on booking's own queues: the running dev services own those messages)
        with pytest.raises(ChannelAccessRefused):
            other = await ch.get_queue(topology.NOTIFIER.inbox)
            await other.get(fail=False)  # refused before any message moves; guest could read it
