"""MongoDB access: PyMongo's async client (the successor of Motor), configured once."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.topology import Topology
from pymongo.errors import AutoReconnect, BulkWriteError

Doc = dict[str, Any]
#: the server's error code for a unique index (`_id` included) that already holds the value
DUPLICATE_KEY = 11000


def inserted_despite_duplicates(exc: BulkWriteError) -> int:
    """An unordered `insert_many` that failed only on duplicate keys: how many went in; any other
    write error is raised again."""
    if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
        raise exc
    return int(exc.details.get("nInserted", 0))


#: Commands whose time is worth watching; handshakes, pings and cursor bookkeeping are not.
WATCHED = frozenset({"find", "insert", "update", "delete", "findAndModify", "aggregate", "count", "getMore"})


#: What PyMongo's pool raises on a checkout while it is paused (the CMAP spec's PoolClearedError).
POOL_PAUSED = "connection pool paused"


def _is_pool_cleared_error(error: BaseException | None) -> bool:
    return isinstance(error, AutoReconnect) and POOL_PAUSED in str(error)


def _keep_pool_cleared_errors_out_of_sdam() -> None:
    """A checkout refused by a paused pool must not clear the pool again (SDAM spec: "PoolClearedError
    does not mark server unknown").

    PyMongo 4.20's async client (the latest release) breaks that rule when the operation's error
    handler was created after the clear: the error then carries the pool's current generation, is not
    taken as stale, marks the server Unknown and clears (pauses) the pool once more. The monitor's
    next heartbeat makes it ready; within milliseconds another such operation pauses it again. With a
    few dozen operations waiting, as in a service catching up after a 10 s database pause, that loop
    kept the scheduler's pool paused long after the database answered again (chaos drill
    `test_mongodb_wire_server_stopped_10s`; the trace: docs/performance.md, finding 8). Ignoring these
    errors in SDAM leaves the decision to the heartbeat, as the spec intends; the refusal asks for that
    heartbeat at once.
    `tests/integration/test_mongo_pool_cleared.py` fails without this.
    """
    original = Topology._handle_error
    if getattr(original, "_consult_pool_cleared", False):
        return

    async def _handle_error(self: Topology, address: Any, err_ctx: Any) -> None:
        if _is_pool_cleared_error(err_ctx.error):
            server = self._servers.get(address)
            if server is not None:
                server.request_check()  # the heartbeat that readies the pool comes soon, not in 10 s
            return
        await original(self, address, err_ctx)

    _handle_error._consult_pool_cleared = True  # type: ignore[attr-defined]
    Topology._handle_error = _handle_error  # type: ignore[method-assign]


_keep_pool_cleared_errors_out_of_sdam()


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


def as_stored(at: datetime) -> datetime:
    """The instant as BSON keeps it (milliseconds, UTC): what a filter on a stored time must use."""
    return at.astimezone(UTC).replace(microsecond=at.microsecond // 1000 * 1000)


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


class ServerWatch(monitoring.ServerHeartbeatListener):
    """Logs when the database server stops answering PyMongo's heartbeats and when it answers again.

    (Heartbeats only: a server or topology listener makes the client start its event thread at
    construction, before there is an event loop.)
    """

    def __init__(self, service: str) -> None:
        self.log = logging.getLogger(f"consult.{service}.mongo")
        self.reachable = True

    def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
        if not self.reachable:
            self.reachable = True
            self.log.info("database %s:%s answers again", *event.connection_id)

    def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
        if self.reachable:
            self.reachable = False
            self.log.warning("database %s:%s does not answer: %s", *event.connection_id, event.reply)
