"""Queue depth and parked messages, read from the RabbitMQ management API and moved with confirms."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from pydantic import Field
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from shared import parking, topology
from shared.settings import ServiceSettings

console = Console()
dlq = typer.Typer(help="Parked messages: what could not be handled, and why.", no_args_is_help=True)


class OpsSettings(ServiceSettings):
    rabbitmq_management_url: str = Field(
        "http://guest:guest@127.0.0.1:15672/api", description="RabbitMQ management API"
    )


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
    messages = httpx.post(url, json=parking.peek_body(limit), timeout=10).raise_for_status().json()
    table = Table(title=f"{q.parking}: {len(messages)} shown")
    for col in ("routing key", "reason", "detail", "body"):
        table.add_column(col, overflow="fold")
    for m in map(parking.Parked.of, messages):
        table.add_row(m.routing_key, m.reason, m.detail, "(sealed by the service)" if m.sealed else m.body)
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
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"replaying {q.parking}", total=None)

        def moved(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return await parking.replay(settings.amqp_url, q, limit, moved)


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2)
