"""`POST /v1/ops/parked/replay` on the scheduler, the notifier and audit, in-process against the real
broker and FerretDB: a message each cannot read is parked for real; a key without the role `operator`
is refused 403; one with it has the service move the message back to its own inbox, where it is
handled again (still unreadable: parked again, saying where it was replayed from). Booking's:
test_console_ops.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aio_pika
import httpx
import pytest
from typer.testing import CliRunner

from ops.cli import app
from services.audit.auth import credential
from services.notifier.app import create_app as notifier_app
from services.notifier.config import Settings as NotifierSettings
from services.notifier.keys import OpsKeyStore
from services.scheduler.store.staff_keys import StaffKeyStore
from shared import parking, topology
from shared.mongo import connect
from shared.store.keys import Holder
from tests.integration.test_scheduler_flow import scheduler
from tests.support import eventually, serve
from tests.support.audit import AUDITOR_KEY, T0, running_audit
from tests.support.booking import parked, publish
from tests.support.scheduler import STAFF

AUDIT_OPERATOR = "ak-test-operator.operator-secret-0123456789"
SCHEDULER_OPERATOR = "css_test-operator-key-0123456789abcdefghijklmnopq"
NOTIFIER_CONSOLE = "cnk_test-console-key-0123456789abcdefghijklmnopqrs"


async def parked_count(amqp_url: str, queue: str) -> int:
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        q = await (await conn.channel()).get_queue(queue)
        return q.declaration_result.message_count or 0


async def park_and_replay(
    http: httpx.AsyncClient,
    amqp_url: str,
    q: topology.ServiceQueues,
    routing_key: str,
    *,
    refused: dict[str, str],
    operator: dict[str, str],
) -> None:
    await publish(amqp_url, b"\xff not an event", routing_key, exchange=topology.EVENTS)

    async def one_parked() -> bool:
        return await parked_count(amqp_url, q.parking) == 1

    await eventually(one_parked, what=f"the unreadable message in {q.parking}")
    r = await http.post("/v1/ops/parked/replay", json={"limit": 1}, headers=refused)
    assert r.status_code == 403, r.text
    assert (await http.post("/v1/ops/parked/replay", json={"limit": 0}, headers=operator)).status_code == 422
    r = await http.post("/v1/ops/parked/replay", json={"limit": 5}, headers=operator)
    assert r.status_code == 200, r.text
    assert r.json() == {"parking": q.parking, "inbox": q.inbox, "moved": 1}

    async def parked_again() -> list[Any]:
        return [
            m
            for m in await parked(amqp_url, q.parking)
            if m.headers.get(parking.REPLAYED_HEADER) == q.parking
        ]

    assert (
        len(
            await eventually(
                parked_again, what=f"the replayed message handled and parked again by {q.service}"
            )
        )
        == 1
    )


async def test_the_scheduler_replays_its_parked_messages_for_an_operator_only(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        store = StaffKeyStore(s.runtime.db)
        await store.register(SCHEDULER_OPERATOR, "ops-desk", ["*"], s.clock.now(), Holder(roles=["operator"]))
        operator = {"X-Staff-Key": SCHEDULER_OPERATOR}
        key = topology.SCHEDULER.events[0]
        await park_and_replay(s.client, amqp_url, topology.SCHEDULER, key, refused=STAFF, operator=operator)


async def test_audit_replays_its_parked_messages_for_an_operator_only(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with running_audit(make_settings) as a:
        doc = credential(AUDIT_OPERATOR, name="運用 担当", roles=["operator"], now=T0, created_by="test")
        await a.service.store.put_credential(doc)
        auditor = {"Authorization": f"Bearer {AUDITOR_KEY}"}
        operator = {"Authorization": f"Bearer {AUDIT_OPERATOR}"}
        await park_and_replay(
            a.http, amqp_url, topology.AUDIT, "booking.anything", refused=auditor, operator=operator
        )
        # the role opens no record
        assert (await a.http.get("/v1/audit/records", headers=operator)).status_code == 403


async def test_the_notifier_replays_its_parked_messages_for_an_operator_only(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    app = notifier_app(make_settings(NotifierSettings))
    async with serve(app) as http:
        store = OpsKeyStore(app.state.delivery.runtime.db)
        await store.register(NOTIFIER_CONSOLE, "dev-console", T0, Holder(roles=["operator"], delegates=True))
        console = {"Authorization": f"Bearer {NOTIFIER_CONSOLE}"}
        nobody = await http.post("/v1/ops/parked/replay", json={"limit": 1}, headers=console)
        assert nobody.status_code == 401  # the console's key acts only for a named person
        as_staff = console | {"X-Acting-Person": "sato.jiro", "X-Acting-Roles": ""}
        as_operator = console | {"X-Acting-Person": "ops.tanaka", "X-Acting-Roles": "operator"}
        key = topology.NOTIFIER.events[0]
        await park_and_replay(http, amqp_url, topology.NOTIFIER, key, refused=as_staff, operator=as_operator)


async def test_consultctl_makes_and_revokes_a_notifier_operator_key(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(NotifierSettings)
    monkeypatch.setenv("MONGODB_URL", settings.mongodb_url)
    monkeypatch.setenv("DB_PREFIX", settings.db_prefix)

    async def consultctl(*args: str) -> Any:
        return await asyncio.to_thread(CliRunner().invoke, app, ["notifier", "ops-key", *args])

    made = await consultctl("create", "--person", "suzuki.ops", "--name", "鈴木")
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[0]
    client = connect(settings.mongodb_url, app_name="test")
    try:
        store = OpsKeyStore(client[settings.database("notifier")])
        found = await store.find(key)
        assert found is not None and (found.person, found.roles) == ("suzuki.ops", frozenset({"operator"}))
        revoked = await consultctl("revoke-key", found.key_id)
        assert revoked.exit_code == 0, revoked.output
        assert await store.find(key) is None  # a revoked key opens nothing
    finally:
        await client.close()
