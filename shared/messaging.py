"""Publishing with confirms and consuming with retries, parking and dedupe: the one way services talk.

A consumer never drops a message. Each delivery ends in exactly one of: handled and acked; already
seen (duplicate) and acked; copied to a delay queue for another attempt, then acked; or copied to
the service's parking queue with the reason in its headers, then acked. The copy is confirmed by the
broker before the original is acked, so a crash in between only causes a redelivery.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.rabbit import RabbitBroker
from faststream.rabbit.message import RabbitMessage
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared import topology
from shared.events import Envelope, MessageError, parse_event
from shared.mongo import Doc

log = logging.getLogger(__name__)

Handler = Callable[[Envelope[Any]], Awaitable[None]]
Parser = Callable[[RabbitMessage], Envelope[Any]]


class TransientError(Exception):
    """Worth another attempt later: a peer is down, a lock is held, a timeout."""


class EventPublisher:
    """Persistent, mandatory publishes with publisher confirms; unroutable raises."""

    def __init__(self, broker: RabbitBroker) -> None:
        self.broker = broker

    async def publish(self, event: Envelope[Any], exchange: str = topology.EVENTS) -> None:
        await self.broker.publish(
            event.to_json(),
            exchange=exchange,
            routing_key=event.type,
            mandatory=True,
            persist=True,
            message_id=str(event.event_id),
            correlation_id=str(event.correlation_id),
            content_type="application/json",
            message_type=event.type,
            timestamp=event.occurred_at,
        )

    async def publish_raw(
        self, body: bytes, *, exchange: str, routing_key: str, headers: dict[str, Any]
    ) -> None:
        await self.broker.publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            mandatory=True,
            persist=True,
            headers=headers,
            content_type="application/json",
        )


class Inbox:
    """Event ids a consumer has finished with; a unique _id makes the mark idempotent."""

    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection

    async def seen(self, event_id: str) -> bool:
        return await self.collection.find_one({"_id": event_id}, {"_id": 1}) is not None

    async def mark(self, event_id: str, event_type: str, at: float) -> None:
        with contextlib.suppress(DuplicateKeyError):
            await self.collection.insert_one({"_id": event_id, "type": event_type, "at": at})


class Consumer:
    """Routes one service's inbox by event type to its handlers."""

    def __init__(
        self,
        queues: topology.ServiceQueues,
        publisher: EventPublisher,
        inbox: Inbox | None,
        parser: Parser | None = None,
    ) -> None:
        self.queues = queues
        self.publisher = publisher
        self.inbox = inbox
        self.parser = parser or (lambda msg: parse_event(msg.body))
        self.handlers: dict[str, Handler] = {}
        self.stats = {"handled": 0, "duplicates": 0, "retried": 0, "parked": 0}

    def on(self, event_type: str) -> Callable[[Handler], Handler]:
        """Decorator: handle events of this routing key ("*": every event without its own handler)."""

        def register(fn: Handler) -> Handler:
            self.handlers[event_type] = fn
            return fn

        return register

    async def __call__(self, msg: RabbitMessage) -> None:
        try:
            await self._process(msg)
        except Exception:
            # Could not even park or retry (broker gone): leave it unacked to be redelivered.
            log.exception("%s: delivery left for redelivery", self.queues.inbox)
            await msg.nack(requeue=True)
            return
        await msg.ack()

    async def _process(self, msg: RabbitMessage) -> None:
        attempt = int((msg.headers or {}).get(topology.ATTEMPT_HEADER, 0))
        try:
            event = self.parser(msg)
            handler = self.handlers.get(event.type) or self.handlers.get("*")
            if handler is None:
                raise MessageError("no-handler", f"{self.queues.service} does not handle {event.type}")
        except MessageError as exc:
            await self.park(msg, exc.reason, exc.detail)
            return
        event_id = str(event.event_id)
        if self.inbox is not None and await self.inbox.seen(event_id):
            self.stats["duplicates"] += 1
            return
        try:
            await handler(event)
        except MessageError as exc:
            await self.park(msg, exc.reason, exc.detail)
            return
        except (TransientError, PyMongoError, ConnectionError, TimeoutError) as exc:
            await self.retry(msg, attempt, f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # a bug: retry a few times, then park it for a human
            log.exception("%s: handler for %s failed", self.queues.service, event.type)
            await self.retry(msg, attempt, f"{type(exc).__name__}: {exc}")
            return
        if self.inbox is not None:
            await self.inbox.mark(event_id, event.type, time.time())
        self.stats["handled"] += 1

    async def retry(self, msg: RabbitMessage, attempt: int, detail: str) -> None:
        delay = self.queues.delay_for(attempt + 1)
        if delay is None:
            await self.park(msg, "retries-exhausted", detail)
            return
        headers = dict(msg.headers or {})
        headers[topology.ATTEMPT_HEADER] = attempt + 1
        headers[topology.DETAIL_HEADER] = detail[:500]
        log.warning("%s: attempt %d failed (%s); again in %ss", self.queues.inbox, attempt + 1, detail, delay)
        await self.publisher.publish_raw(
            msg.body, exchange=topology.RETRY, routing_key=self.queues.retry_queue(delay), headers=headers
        )
        self.stats["retried"] += 1

    async def park(self, msg: RabbitMessage, reason: str, detail: str) -> None:
        headers = dict(msg.headers or {})
        headers[topology.REASON_HEADER] = reason
        headers[topology.DETAIL_HEADER] = detail[:2000]
        headers[topology.SOURCE_HEADER] = self.queues.inbox
        headers["x-routing-key"] = msg.raw_message.routing_key or ""
        log.error("%s: parked a message: %s %s", self.queues.inbox, reason, detail[:200])
        await self.publisher.publish_raw(
            msg.body, exchange=topology.DEAD, routing_key=self.queues.parking, headers=headers
        )
        self.stats["parked"] += 1
