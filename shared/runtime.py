"""One service's wiring: broker, database, consumer, outbox relays, HTTP app and lifespan.

Each service's `app.py` builds a Runtime, registers its handlers and routes, and hands
`runtime.http_app()` to uvicorn. Start-up order: declare topology, prepare stores, start relays,
start consuming. Shutdown is the reverse, and FastStream waits for in-flight messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from prometheus_client import make_asgi_app
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared import limits, logsafe, outbox, topology
from shared.clock import Clock
from shared.events import AccessLogged, Envelope, Payload, new_event
from shared.httperrors import LastResort
from shared.messaging import Consumer, EventPublisher, Inbox, Parser
from shared.metrics import RuntimeCollector, new_registry
from shared.mongo import CommandTimer, Doc, ServerWatch, connect, ping
from shared.outbox import MarkedRelay, OutboxRelay
from shared.sealing import Sealer, SecretSealer
from shared.settings import ServiceSettings
from shared.text import is_clean, shown

Hook = Callable[[], Awaitable[None]]
SHUTDOWN_STEP_SECONDS = 10.0


def task_stacks(limit: int = 6) -> str:
    """Where every task of the running loop waits: for the log when something is stuck."""
    lines = []
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=limit)
        where = " <- ".join(
            f"{f.f_code.co_name} ({f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno})" for f in frames
        )
        lines.append(f"  {task.get_name()}: {where or 'not started'}")
    return "\n".join(sorted(lines))


async def _raw_body(msg: Any) -> bytes:
    """Hand the handler the undecoded body, so unreadable input is parked by us with a reason."""
    return bytes(msg.body)


def _request_id(given: str | None) -> str:
    """The caller's X-Request-Id if it is plain printable ASCII (it is answered in a header, logged and
    published); otherwise one of ours."""
    if given and len(given) <= 100 and given.isascii() and is_clean(given):
        return given
    return uuid.uuid4().hex


class Runtime:
    def __init__(
        self,
        settings: ServiceSettings,
        queues: topology.ServiceQueues,
        *,
        clock: Clock | None = None,
        parser: Parser | None = None,
        sealer: Sealer | None = None,
    ) -> None:
        self.settings = settings
        self.queues = queues
        self.name = queues.service
        self.clock: Clock = clock or settings.clock()
        self.log = logging.getLogger(f"consult.{self.name}")
        self.metrics = new_registry()
        self.broker = RabbitBroker(
            settings.amqp_url,
            default_channel=Channel(prefetch_count=settings.prefetch, on_return_raises=True),
            graceful_timeout=15.0,
            log_level=logging.DEBUG,
            app_id=self.name,
            middlewares=[RabbitPrometheusMiddleware(registry=self.metrics, app_name=self.name)],
        )
        self.mongo = connect(
            settings.mongodb_url,
            app_name=self.name,
            listeners=[CommandTimer(self.metrics, self.name), ServerWatch(self.name)],
        )
        self.db: AsyncDatabase[Doc] = self.mongo[settings.database(self.name)]
        self.publisher = EventPublisher(self.broker)
        # R12: seals what this service keeps of a message or an event (parked and delayed copies,
        # outboxes): the service's own keys if it has them, else one derived from its secret
        self.sealer: Sealer = sealer or SecretSealer.from_secret(settings.secret_key, f"service:{self.name}")
        self.consumer = Consumer(queues, self.publisher, Inbox(self.db["inbox"]), parser, sealer=self.sealer)
        self.relays: list[OutboxRelay] = []
        self.access_log = self.relay(self.db["access_outbox"], delete_sent=True)
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.started = False
        self.metrics.register(RuntimeCollector(self.name, queues.inbox, self.consumer, self.relays))
        subscriber = self.broker.subscriber(
            RabbitQueue(queues.inbox, declare=False),
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_body,
            title=queues.inbox,
        )

        @subscriber
        async def receive(body: bytes, msg: RabbitMessage) -> None:
            await self.consumer(msg)

    # ----------------------------------------------------------------- building blocks

    def relay(self, collection: AsyncCollection[Doc], *, delete_sent: bool = False) -> OutboxRelay:
        r = OutboxRelay(
            collection,
            self.publisher,
            self.settings.outbox_poll_seconds,
            delete_sent=delete_sent,
            sealer=self.sealer,
        )
        self.relays.append(r)
        return r

    def marked_relay(self, collection: AsyncCollection[Doc]) -> MarkedRelay:
        """The relay for documents whose writers `outbox.announce` their events (see MarkedRelay)."""
        r = MarkedRelay(collection, self.publisher, self.settings.outbox_poll_seconds, sealer=self.sealer)
        self.relays.append(r)
        return r

    def event(
        self,
        payload: Payload,
        office_id: str,
        *,
        cause: Envelope[Any] | None = None,
        correlation_id: uuid.UUID | None = None,
    ) -> Envelope[Any]:
        return new_event(
            payload,
            office_id=office_id,
            producer=self.name,
            clock=self.clock,
            cause=cause,
            correlation_id=correlation_id,
        )

    def on_startup(self, hook: Hook) -> Hook:
        self._startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        self._shutdown.append(hook)
        return hook

    def running_tasks(self, name: str) -> list[asyncio.Task[Any]]:
        """The background tasks of this name still running (shutdown waits for them)."""
        return [t for t in self._background if t.get_name() == name and not t.done()]

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ----------------------------------------------------------------- life

    async def declare(self) -> None:
        connection = await aio_pika.connect(self.settings.amqp_url)
        async with connection:
            # Where the broker was set up from deploy/rabbitmq/definitions.json the shared exchanges
            # exist and a service user may not (re)declare them (no configure permission on them).
            exchanges = not await topology.exchanges_exist(connection)
            await topology.declare_service(await connection.channel(), self.queues, exchanges=exchanges)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        logsafe.configure_logging(self.name, self.settings.log_level)  # R12: no PII in logs
        await self.declare()
        for r in self.relays:
            await r.ensure_indexes()
        for hook in self._startup:
            await hook()
        for r in self.relays:
            r.start()
        await self.broker.start()
        self.started = True
        self.log.info("%s started", self.name)
        try:
            yield self
        finally:
            self.started = False
            # Stop consuming (in-flight handlers finish first) but keep the connection: what the
            # handlers, hooks and last requests (access logs) wrote to the outboxes is published by
            # the relays' final drain before the broker closes, not left for the next start.
            for subscriber in self.broker.subscribers:  # bounded too: a cancel the broker never answers
                await self._bounded(subscriber.stop(), "stopping the consumer")
            # Every step is bounded: a stuck peer must not keep the process from exiting, and
            # whatever is not done stays in MongoDB (outboxes, timers) for the next start.
            for hook in reversed(self._shutdown):
                await self._bounded(hook(), "shutdown hook")
            if self._background:
                _, pending = await asyncio.wait(set(self._background), timeout=SHUTDOWN_STEP_SECONDS)
                for task in pending:
                    task.cancel()
            await asyncio.gather(
                *(self._bounded(r.stop(), f"outbox {r.collection.name}") for r in self.relays)
            )
            await self.broker.stop()
            await self.mongo.close()
            self.log.info("%s stopped", self.name)

    async def _bounded(self, step: Awaitable[Any], what: str) -> None:
        try:
            await asyncio.wait_for(step, SHUTDOWN_STEP_SECONDS)
        except TimeoutError:
            self.log.warning(
                "%s did not finish within %ss at shutdown; the tasks then:\n%s",
                what,
                SHUTDOWN_STEP_SECONDS,
                task_stacks(),
            )
        except Exception as exc:  # broker unreachable at shutdown: the events wait in MongoDB
            self.log.warning("%s left pending at shutdown (sent at the next start): %s", what, exc)

    async def readiness(self) -> dict[str, bool]:
        broker_ok, mongo_ok = await asyncio.gather(
            self.broker.ping(timeout=2.0), asyncio.wait_for(ping(self.mongo), 3.0)
        )
        return {"broker": bool(broker_ok), "database": bool(mongo_ok), "started": self.started}

    # ----------------------------------------------------------------- HTTP

    def http_app(self, *, title: str, version: str = "1.0.0", **kwargs: Any) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with self.running():
                yield

        app = FastAPI(title=title, version=version, lifespan=lifespan, **kwargs)
        app.state.runtime = self
        app.mount("/metrics", make_asgi_app(self.metrics))

        @app.get("/healthz", tags=["ops"], summary="The process is up")
        async def healthz() -> dict[str, str]:
            return {"status": "ok", "service": self.name}

        @app.get("/asyncapi.json", tags=["ops"], summary="AsyncAPI document of this service's messages")
        async def asyncapi_document() -> dict[str, Any]:
            from shared.asyncapi import asyncapi

            return asyncapi((self.name,))

        @app.get("/readyz", tags=["ops"], summary="Broker and database reachable")
        async def readyz() -> JSONResponse:
            checks = await self.readiness()
            ok = all(checks.values())
            return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

        @app.middleware("http")
        async def access_log(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            started = time.perf_counter()
            request_id = _request_id(request.headers.get("x-request-id"))
            request.state.request_id = request_id

            def record(status: int) -> None:
                if request.url.path not in ("/healthz", "/readyz", "/metrics"):
                    self.spawn(self._record_access(request, status, started, request_id), "access")

            try:
                response = await call_next(request)
            except Exception:  # the server answers 500: the access is recorded all the same
                record(500)
                raise
            record(response.status_code)
            response.headers["x-request-id"] = request_id
            return response

        async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
            if isinstance(exc, DuplicateKeyError):  # a conflict no route handled: a defect, not an outage
                raise exc
            self.log.warning("%s %s: database error: %s", request.method, request.url.path, exc)
            body = {"error": "database-unavailable", "message": "the database did not answer; retry later"}
            return JSONResponse(body, 503, headers={"Retry-After": "1"})

        app.add_exception_handler(PyMongoError, database_unavailable)
        limits.limit_body(app, self.settings.max_body_bytes)  # 413 before a body is read
        app.add_middleware(LastResort, service=self.name)  # outermost: any other error, a JSON 500
        return app

    async def _record_access(self, request: Request, status: int, started: float, request_id: str) -> None:
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        # from the request (a path parameter, a header): escaped to the text rules, so the access
        # record is kept whatever was sent (R10)
        actor = shown(str(getattr(request.state, "actor", None) or "anonymous"), 100)
        office = shown(str(getattr(request.state, "office_id", None) or "-"), 64)
        event = self.event(
            AccessLogged(
                service=self.name,
                actor=actor,
                method=request.method,
                route=template,
                status=status,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
                request_id=request_id,
                at=self.clock.now(),
            ),
            office_id=office,
        )
        try:
            await self.access_log.collection.insert_one(
                {"_id": str(event.event_id), **outbox.new_document_fields([event], sealer=self.sealer)}
            )
            self.access_log.poke(str(event.event_id))
        except Exception as exc:
            self.log.error("access record not stored: %s", exc)
