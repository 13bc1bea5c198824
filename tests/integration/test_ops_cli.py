"""consultctl queues and dlq against a real RabbitMQ: parked messages are shown and replayed, not lost."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest
from typer.testing import CliRunner

from ops.cli import app
from shared import topology
from tests.support import RABBITMQ_API


async def _park(amqp_url: str, bodies: list[bytes]) -> None:
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        ch = await conn.channel()
        await topology.declare_service(ch, topology.NOTIFIER)
        dead = await ch.get_exchange(topology.DEAD)
        for body in bodies:
            await dead.publish(
                aio_pika.Message(
                    body,
                    headers={topology.REASON_HEADER: "invalid-event", topology.ATTEMPT_HEADER: 3},
                    delivery_mode=2,
                ),
                routing_key=topology.NOTIFIER.parking,
            )


async def _drain(amqp_url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    conn = await aio_pika.connect(amqp_url)
    out = []
    async with conn:
        ch = await conn.channel()
        q = await ch.get_queue(queue)
        while (m := await q.get(fail=False)) is not None:
            out.append(m)
            await m.ack()
    return out


async def _invoke(*args: str) -> Any:
    """The CLI runs its own event loop, so it runs in a thread here, as from a shell."""
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env={"COLUMNS": "200"})


@pytest.fixture
def cli_env(amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AMQP_URL", amqp_url)
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", RABBITMQ_API)
    return amqp_url


async def test_dlq_show_lists_reasons_and_leaves_messages_parked(cli_env: str) -> None:
    await _park(cli_env, [b'{"type": "x.y"}', b"\xff"])
    result = await _invoke("dlq", "show", "notifier")
    assert result.exit_code == 0, result.output
    assert "invalid-event" in result.output
    assert len(await _drain(cli_env, topology.NOTIFIER.parking)) == 2  # still there


async def test_dlq_replay_moves_every_parked_message_back_to_the_inbox(cli_env: str) -> None:
    await _park(cli_env, [b"one", b"two", b"three"])
    result = await _invoke("dlq", "replay", "notifier")
    assert result.exit_code == 0, result.output
    assert "replayed 3" in result.output
    inbox = await _drain(cli_env, topology.NOTIFIER.inbox)
    assert sorted(m.body for m in inbox) == [b"one", b"three", b"two"]
    assert all(topology.ATTEMPT_HEADER not in (m.headers or {}) for m in inbox)  # fresh attempts
    assert await _drain(cli_env, topology.NOTIFIER.parking) == []


async def test_queues_shows_depth_of_the_parking_queue(cli_env: str) -> None:
    await _park(cli_env, [b"a"])
    result = await _invoke("queues")
    assert result.exit_code == 0, result.output
    assert "notifier.parking" in result.output
