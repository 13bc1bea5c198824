"""Queue depth and parked messages, read from the RabbitMQ management API and moved with confirms."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any
from urllib.parse import quote

import aio_pika
import httpx
import typer
from pydantic import Field
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from shared import topology
from shared.settings import ServiceSettings

console = Console()
dlq = typer.Typer(help="Parked messages: what could not be handled, and why.", no_args_is_help=True)


class OpsSettings(ServiceSettings):
    rabbitmq_management_url: str = Field(
        "http://guest:guest@127.0.0.1:15672/api", description="RabbitMQ management API"
    )

    @property
    def vhost(self) -> str:
        path = self.amqp_url.split("://", 1)[-1].split("/", 1)
        return path[1] if len(path) > 1 and path[1] else "/"


def _api(settings: OpsSettings, path: str) -> str:
    return f"{settings.rabbitmq_management_url.rstrip('/')}/{path}/{quote(settings.vhost, safe='')}"


def _rate(q: dict[str, Any], key: str) -> str:
    details = q.get("message_stats", {}).get(f"{key}_details", {})
    return f"{details.get('rate', 0.0):.1f}/s"


def queues() -> None:
    """Depth, consumers, rates and parked counts of every queue."""
    settings = OpsSettings()
    try:
        rows = httpx.get(_api(settings, "queues"), timeout=10).raise_for_status().json()
    except httpx.HTTPError as exc:
        console.print(f"[red]management API not reachable[/red] ({settings.rabbitmq_management_url}): {exc}")
        raise typer.Exit(1) from exc
    table = Table(title=f"queues on vhost {settings.vhost}")
    for col in ("queue", "type", "ready", "unacked", "consumers", "in", "out"):
        table.add_column(col, justify="left" if col in ("queue", "type") else "right")
    for q in sorted(rows, key=lambda r: r["name"]):
        parked = q["name"].endswith(".parking") and q.get("messages", 0) > 0
        style = "bold red" if parked else None
        table.add_row(
            q["name"],
            q.get("type", "classic"),
            str(q.get("messages_ready", 0)),
            str(q.get("messages_unacknowledged", 0)),
            str(q.get("consumers", 0)),
            _rate(q, "publish"),
            _rate(q, "deliver_get"),
            style=style,
        )
    console.print(table)


def _parking(service: str) -> topology.ServiceQueues:
    queues = topology.SERVICES.get(service)
    if queues is None:
        console.print(f"[red]unknown service {service!r}[/red]; one of {', '.join(topology.SERVICES)}")
        raise typer.Exit(2)
    return queues


@dlq.command("show")
def show(
    service: Annotated[str, typer.Argument(help="booking, scheduler, notifier or audit")],
    limit: Annotated[int, typer.Option(help="how many to show")] = 20,
) -> None:
    """Peek at parked messages (they stay parked) with the reason each was parked."""
    q = _parking(service)
    settings = OpsSettings()
    url = f"{_api(settings, 'queues')}/{quote(q.parking, safe='')}/get"
    body = {"count": limit, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 2000}
    messages = httpx.post(url, json=body, timeout=10).raise_for_status().json()
    table = Table(title=f"{q.parking}: {len(messages)} shown")
    for col in ("routing key", "reason", "detail", "body"):
        table.add_column(col, overflow="fold")
    for m in messages:
        headers = m.get("properties", {}).get("headers", {})
        # R12: a body the service sealed opens only in the service; ops see where it came from and why
        sealed = headers.get(topology.SEALED_HEADER) is not None
        table.add_row(
            str(headers.get("x-routing-key", m.get("routing_key", ""))),
            str(headers.get(topology.REASON_HEADER, "delivery limit (broker)")),
            str(headers.get(topology.DETAIL_HEADER, ""))[:300],
            "(sealed by the service)" if sealed else str(m.get("payload", ""))[:300],
        )
    console.print(table)


@dlq.command("replay")
def replay(
    service: Annotated[str, typer.Argument(help="booking, scheduler, notifier or audit")],
    limit: Annotated[int, typer.Option(help="at most this many; 0 for all")] = 0,
) -> None:
    """Move parked messages back to the service's inbox (each confirmed before it leaves parking)."""
    q = _parking(service)
    moved = asyncio.run(_replay(OpsSettings(), q, limit))
    console.print(f"replayed {moved} message(s) from {q.parking} to {q.inbox}")


async def _replay(settings: OpsSettings, q: topology.ServiceQueues, limit: int) -> int:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        parking = await channel.get_queue(q.parking)
        redeliver = await channel.get_exchange(topology.REDELIVER)
        total = parking.declaration_result.message_count or 0
        if limit:
            total = min(total, limit)
        moved = 0
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"replaying {q.parking}", total=total)
            while moved < total and (msg := await parking.get(fail=False, no_ack=False)) is not None:
                headers = {
                    k: v
                    for k, v in (msg.headers or {}).items()
                    # the service opens the sealed body and trusts the sender it sealed itself
                    if not k.startswith("x-") or k in (topology.SEALED_HEADER, topology.SENDER_HEADER)
                }
                headers["x-replayed-from"] = q.parking
                await redeliver.publish(
                    aio_pika.Message(
                        msg.body,
                        headers=headers,
                        content_type=msg.content_type,
                        message_id=msg.message_id,
                        correlation_id=msg.correlation_id,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=q.inbox,
                    mandatory=True,
                )
                await msg.ack()
                moved += 1
                progress.advance(task)
        return moved


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2)
