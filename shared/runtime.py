"""One service's wiring: broker, database, consumer, outbox relays, background tasks and lifespan.

Each service's `app.py` builds a Runtime, registers its handlers and routes, and hands
`runtime.http_app()` (shared/http.py; its access log: shared/access_log.py) to uvicorn. Start-up
order: declare topology, prepare stores, start relays, start consuming. Shutdown is the reverse, and
FastStream waits for in-flight messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from fastapi import FastAPI
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from shared import logsafe, topology
from shared.access_log import AccessLog
from shared.clock import Clock
from shared.events import Producer
from shared.http import service_app
from shared.messaging import Consumer, EventPublisher, Inbox, Parser
from shared.metrics import RuntimeCollector, new_registry
from shared.mongo import CommandTimer, Doc, ServerWatch, connect, ping
from shared.sealing import Sealer, SecretSealer
from shared.settings import ServiceSettings
from shared.store.outbox import MarkedRelay, OutboxRelay

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


async def _the_message(msg: Any) -> Any:
    """Hand the handler FastStream's message itself: the consumer reads the undecoded body (so
    unreadable input is parked by us with a reason) and its properties, and acks it."""
    return msg


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
        self.producer = Producer(self.name, self.clock)  # this service's events
        self.event = self.producer.event
        self.log = logging.getLogger(f"consult.{self.name}")
        self.metrics = new_registry()
        self.broker = RabbitBroker(
            settings.amqp_url,
            default_channel=Channel(prefetch_count=settings.prefetch, on_return_raises=True),
            graceful_timeout=15.0,
            log_level=logging.DEBUG,
            # no dependency injection into the one handler: resolving its `msg: RabbitMessage`
            # argument (a context lookup, a sync call) ran twice per delivery in a worker thread
            # (anyio.to_thread): two thread hops per message, costly when the cores are busy
            apply_types=False,
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
        self.access = AccessLog(
            self.name,
            self.access_log,
            clock=self.clock,
            sealer=self.sealer,
            spawn=self.spawn,
            log=self.log,
            client_ip=settings.client_ip(),  # R10: the client behind the office's trusted proxies
        )
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.started = False
        self.metrics.register(RuntimeCollector(self.name, queues.inbox, self.consumer, self.relays))
        subscriber = self.broker.subscriber(
            RabbitQueue(queues.inbox, declare=False),
            ack_policy=AckPolicy.MANUAL,
            decoder=_the_message,
            title=queues.inbox,
        )

        @subscriber
        async def receive(msg: RabbitMessage) -> None:
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
            await self._bounded(self.broker.stop(), "closing the broker connection")
            await self._bounded(self.mongo.close(), "closing the database client")
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
        """The service's HTTP app (shared/http.py): its lifespan is this runtime's."""
        return service_app(self, title=title, version=version, **kwargs)
