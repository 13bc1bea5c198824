"""MongoDB access: PyMongo's async client (the successor of Motor), configured once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from pymongo import AsyncMongoClient, monitoring

Doc = dict[str, Any]

#: Commands whose time is worth watching; handshakes, pings and cursor bookkeeping are not.
WATCHED = frozenset({"find", "insert", "update", "delete", "findAndModify", "aggregate", "count", "getMore"})


def connect(
    url: str,
    *,
    app_name: str,
    timeout_ms: int = 5000,
    listeners: list[monitoring._EventListener] | None = None,
) -> AsyncMongoClient[Doc]:
    """A client that returns aware UTC datetimes and standard UUIDs."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        uuidRepresentation="standard",
        appname=app_name,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        # a server that stops answering mid-call must not hang a handler forever
        socketTimeoutMS=30_000,
        event_listeners=listeners or [],
    )


async def ping(client: AsyncMongoClient[Doc]) -> bool:
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True


def filter_shape(command_name: str, command: Mapping[str, Any]) -> str:
    """`id` when the filter is exactly `{_id: <value>}`, `filter` for any other filter, `none` without one.

    The distinction matters on FerretDB 1.x (the local server): only an `{_id: value}` filter is
    pushed down to SQLite; every other filter decodes each document of the collection.
    """
    if command_name == "find":
        query = command.get("filter")
    elif command_name in ("update", "delete"):
        ops = command.get("updates") or command.get("deletes") or [{}]
        query = ops[0].get("q")
    elif command_name in {"findAndModify", "count"}:
        query = command.get("query")
    elif command_name == "aggregate":
        return "pipeline"
    else:
        return "none"
    if not query:
        return "none"
    if list(query) == ["_id"] and not isinstance(query["_id"], dict):
        return "id"
    return "filter"


class CommandTimer(monitoring.CommandListener):
    """Times every data command by command, collection and filter shape into a Prometheus histogram.

    `consult_mongo_command_seconds{command="update",collection="bookings",shape="filter"}` is where a
    slow query shows up first (the end-to-end profile in docs/performance.md reads these).
    """

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.service = service
        self.histogram = Histogram(
            "consult_mongo_command_seconds",
            "MongoDB command round trips by command, collection and filter shape",
            ["service", "command", "collection", "shape"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self._pending: dict[tuple[Any, int], tuple[str, str, str]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name not in WATCHED:
            return
        collection = event.command.get(name)
        if name == "getMore":
            collection = event.command.get("collection")
        shape = filter_shape(name, event.command)
        self._pending[(event.connection_id, event.request_id)] = (name, str(collection), shape)

    def _finish(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent) -> None:
        labels = self._pending.pop((event.connection_id, event.request_id), None)
        if labels is not None:
            self.histogram.labels(self.service, *labels).observe(event.duration_micros / 1e6)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._finish(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._finish(event)
