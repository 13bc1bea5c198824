"""Publishing with confirms and consuming with retries, parking and dedupe: the one way services talk.

A consumer never drops a message. Each delivery ends in exactly one of: handled and acked; already
seen (a duplicate: the same id and content) and acked; copied to a delay queue for another attempt,
then acked; or copied to the service's parking queue with the reason in its headers, then acked.
The copy is confirmed by the broker before the original is acked, so a crash in between only causes
a redelivery.

R12: a parked or delayed copy rests on the broker (parking for as long as ops take), so its body is
sealed with the service's own key (`SEALED_HEADER` says so) and opened by the service when the copy
comes back; only the message in transit to its consumer is in clear. The broker's own dead-lettering
(a consumer that crashed `delivery_limit` times on a message) copies the body as it is.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import aio_pika
from faststream.rabbit import RabbitBroker, RabbitExchange
from faststream.rabbit.message import RabbitMessage
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared import topology
from shared.events import Envelope, MessageError, Payload, parse_event
from shared.logsafe import redact_text
from shared.mongo import Doc
from shared.sealing import Sealer
from shared.store.conditional import delete_if
from shared.store.grouped import GroupedInserts

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Payload)
F = TypeVar("F", bound=Callable[..., Awaitable[None]])

#: a handler of the envelopes of one payload class (`Handler`: of any)
Typed = Callable[[Envelope[P]], Awaitable[None]]
Handler = Callable[[Envelope[Any]], Awaitable[None]]
#: (event, sender) -> None: may the broker-verified sender send this? MessageError parks it
TypedVerifier = Callable[[Envelope[P], str | None], Awaitable[None]]
Verifier = Callable[[Envelope[Any], str | None], Awaitable[None]]
#: the key of the handler of every message without a handler of its own (`Consumer.on_any`)
ANY = "*"
#: (body, message) -> event; the body is the message's, opened if the copy was sealed
Parser = Callable[[bytes, RabbitMessage], Envelope[Any]]


class TransientError(Exception):
    """Worth another attempt later: a peer is down, a lock is held, a timeout."""

    #: the peer's own word on when to come back (HTTP Retry-After), in seconds; 0: ours decide
    retry_after: float = 0.0


#: errors worth another attempt (a delay queue), not a parking: a peer away, a lock held, a timeout
RETRYABLE = (TransientError, PyMongoError, ConnectionError, TimeoutError)


class EventPublisher:
    """Persistent, mandatory publishes with publisher confirms; unroutable raises.

    One message id is in flight at a time: aiormq matches a returned (unroutable) message to its
    publish by message id, so two publishes of one event at once on a channel made the first look
    confirmed while the second got both returns (tests/integration/test_messaging.py shows it).

    The message goes straight to aio-pika on the broker's own channel (FastStream's connection, its
    confirms and `on_return_raises`, its reconnects): FastStream's publish path (command object,
    middlewares, codec) cost more CPU per publish than aio-pika itself and halved the sequential rate
    (bench `layer/publish_sequential`). The properties are the ones FastStream set (app id, a
    correlation id, a timestamp); what was published is counted in `published`, per exchange, for
    `/metrics` (`consult_published_total`).
    """

    def __init__(self, broker: RabbitBroker) -> None:
        self.broker = broker
        self._in_flight: dict[str, asyncio.Event] = {}
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        #: confirmed publishes per exchange
        self.published: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def _alone(self, message_id: str | None) -> AsyncIterator[None]:
        if message_id is None:
            yield
            return
        while (busy := self._in_flight.get(message_id)) is not None:
            await busy.wait()
        done = self._in_flight[message_id] = asyncio.Event()
        try:
            yield
        finally:
            del self._in_flight[message_id]
            done.set()

    async def _exchange(self, name: str) -> aio_pika.abc.AbstractExchange:
        """The exchange on the broker's channel (a robust object: it follows the channel's reopens)."""
        if (exchange := self._exchanges.get(name)) is None:
            # passive, as FastStream's publish did: the exchanges are the topology's, declared before
            exchange = await self.broker.declare_exchange(RabbitExchange(name, declare=False))
            self._exchanges[name] = exchange
        return exchange

    async def _send(self, exchange: str, routing_key: str, message: aio_pika.Message) -> None:
        target = await self._exchange(exchange)
        await target.publish(message, routing_key=routing_key, mandatory=True)
        self.published[exchange] = self.published.get(exchange, 0) + 1

    async def publish(self, event: Envelope[Any], exchange: str = topology.EVENTS) -> None:
        message_id = str(event.event_id)
        message = aio_pika.Message(
            event.to_json(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            correlation_id=str(event.correlation_id),
            content_type="application/json",
            type=event.type,
            timestamp=event.occurred_at,
            app_id=self.broker.config.app_id,
        )
        async with self._alone(message_id):
            await self._send(exchange, event.type, message)

    async def publish_raw(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any],
        message_id: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            content_type="application/json",
            message_id=message_id,
            correlation_id=correlation_id or str(uuid.uuid4()),
            timestamp=datetime.now(UTC),
            app_id=self.broker.config.app_id,
        )
        async with self._alone(message_id):
            await self._send(exchange, routing_key, message)


class Inbox:
    """Claims on event ids, so one event is handled once even when duplicates arrive together.

    A claim is a document with a unique _id (the event id), taken while a handler runs; finishing
    inserts a second document `<event id>#done` instead of updating the claim, so the steady state is
    inserts and `_id` lookups only (on FerretDB an update costs a pass over the whole collection, and
    the inbox grows with every event). Duplicates of a done event are acknowledged; a duplicate
    arriving while another delivery holds the claim waits in a delay queue. A claim left by a crashed
    consumer expires after `lease_seconds` and is taken over.

    A claim and its done marker keep a digest of the message's content: a message that comes with the
    id of another, different message is a conflict, not a duplicate, and is not swallowed silently.

    The claims and done markers of the deliveries in flight (the prefetch window, handled
    concurrently) go to the server together, one `insert_many` per round (`GroupedInserts`): each
    still succeeds or fails on its own, as its `insert_one` did, at a fraction of the cost on FerretDB.
    A claim whose delivery was cancelled while it was on the way is released again once it lands.
    """

    def __init__(self, collection: AsyncCollection[Doc], lease_seconds: float = 120.0) -> None:
        self.collection = collection
        self.lease_seconds = lease_seconds
        self.inserts = GroupedInserts(collection, abandoned=self._abandoned)

    async def _abandoned(self, doc: Doc) -> None:
        if doc.get("state") == "processing":  # a claim nobody holds: free it for the redelivery
            await self.release(str(doc["_id"]))

    @staticmethod
    def done_id(event_id: str) -> str:
        return f"{event_id}#done"

    async def claim(
        self, event_id: str, event_type: str, now: float, digest: str | None = None
    ) -> Literal["new", "done", "busy", "conflict"]:
        claim = {"_id": event_id, "type": event_type, "state": "processing", "at": now, "digest": digest}
        if await self.inserts.insert(claim):
            return "new"
        finished = await self.collection.find_one({"_id": self.done_id(event_id)}, {"digest": 1})
        if finished is not None:
            return "conflict" if _differs(finished, digest) else "done"
        doc = await self.collection.find_one({"_id": event_id})
        if doc is None:
            return "busy"  # released a moment ago; try again shortly
        if _differs(doc, digest):
            return "conflict"
        held_since = float(doc.get("at", 0))
        if now - held_since > self.lease_seconds:
            # one taker per expired claim: a unique insert decides (concurrent conditional updates
            # can all "succeed" on FerretDB), then the winner renews the claim
            try:
                await self.collection.insert_one({"_id": f"{event_id}#taken#{held_since!r}", "at": now})
            except DuplicateKeyError:
                return "busy"
            await self.collection.update_one({"_id": event_id}, {"$set": {"at": now}})
            return "new"
        return "busy"

    async def done(self, event_id: str, now: float, digest: str | None = None) -> None:
        # False when present: a taken-over claim finished twice
        await self.inserts.insert({"_id": self.done_id(event_id), "at": now, "digest": digest})

    async def release(self, event_id: str) -> None:
        await delete_if(self.collection, event_id, {"state": "processing"})

    async def seen(self, event_id: str) -> bool:
        return await self.collection.find_one({"_id": self.done_id(event_id)}, {"_id": 1}) is not None


def _resting_context(service: str) -> str:
    return f"resting-copy:{service}"


def seal_resting_copy(sealer: Sealer, service: str, body: bytes) -> bytes:
    """The body of a copy `service` parks or delays, sealed (any bytes, even unreadable input)."""
    return sealer.seal(base64.b64encode(body).decode("ascii"), _resting_context(service)).encode("ascii")


def open_resting_copy(sealer: Sealer | None, service: str, body: bytes, headers: Mapping[str, Any]) -> bytes:
    """A body as it came, or opened if `headers` say `service` sealed it; a sealed copy that does not
    open (another key, damaged) is a MessageError, so it is parked as it is."""
    if headers.get(topology.SEALED_HEADER) is None:
        return body
    if sealer is None:
        raise MessageError("sealed-copy", f"{service} has no key to open a sealed copy")
    try:
        return base64.b64decode(sealer.open(body.decode("ascii"), _resting_context(service)))
    except Exception as exc:  # not sealed by this service's key, or damaged
        raise MessageError("sealed-copy", f"does not open: {type(exc).__name__}") from exc


def _differs(doc: Doc, digest: str | None) -> bool:
    """Another message's claim (documents written before digests were kept count as the same)."""
    held = doc.get("digest")
    return digest is not None and held is not None and held != digest


def digest_of(event: Envelope[Any]) -> str:
    """What a message says, independent of key order and whitespace: a redelivered copy has the same."""
    canonical = json.dumps(event.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Consumer:
    """Routes one service's inbox by event type to its handlers."""

    def __init__(
        self,
        queues: topology.ServiceQueues,
        publisher: EventPublisher,
        inbox: Inbox | None,
        parser: Parser | None = None,
        *,
        sealer: Sealer | None = None,
    ) -> None:
        self.queues = queues
        self.publisher = publisher
        self.inbox = inbox
        self.parser = parser or (lambda body, msg: parse_event(body))
        self.sealer = sealer  # seals the copies this consumer parks or delays (R12)
        self.handlers: dict[str, Handler] = {}
        self.conflict_handlers: dict[str, Handler] = {}
        self.verifiers: dict[str, Verifier] = {}
        self.stats = {"handled": 0, "duplicates": 0, "retried": 0, "parked": 0}

    def on(self, *payloads: type[P]) -> Callable[[Typed[P]], Typed[P]]:
        """Decorator: handle messages carrying these payload classes, under the routing keys each class
        names (`Payload.routing_keys`); the handler receives the envelope of its payload class."""
        return self._register(self.handlers, payloads)

    def on_any(self) -> Callable[[Handler], Handler]:
        """Decorator: handle every message that has no handler of its own (audit records them all)."""
        return self._register(self.handlers, (), ANY)

    def on_conflict(self, *payloads: type[P]) -> Callable[[Typed[P]], Typed[P]]:
        """Decorator: also tell the sender when a message of these classes reuses another's id (it is
        parked with the reason `message-id-reused` in any case)."""
        return self._register(self.conflict_handlers, payloads)

    def verify(self, *payloads: type[P]) -> Callable[[TypedVerifier[P]], TypedVerifier[P]]:
        """Decorator: check who sent a message of these classes before it is claimed or handled. The
        verifier gets the sender the broker verified (`sender_of`); a MessageError parks the message
        with its reason, a database or transient error sends it round again."""
        return self._register(self.verifiers, payloads)

    @staticmethod
    def _register(table: dict[str, F], payloads: tuple[type[Payload], ...], *keys: str) -> Callable[[F], F]:
        """Put the decorated function in `table` under the payload classes' routing keys (or `keys`)."""
        keys = keys or topology.keys(*payloads)
        if not keys:
            raise ValueError("name the payload classes to handle")

        def register(fn: F) -> F:
            for key in keys:
                table[key] = fn
            return fn

        return register

    def sender_of(self, msg: RabbitMessage, body: bytes) -> str | None:
        """Who published the message, as the broker verified it: the AMQP `user_id` property, which
        RabbitMQ refuses unless it names the publisher's own login. A copy this service delayed or
        parked (re-published under its own login) carries the original sender in `SENDER_HEADER`,
        sealed with its key and bound to the message id and body; any other such header is ignored."""
        carried = (msg.headers or {}).get(topology.SENDER_HEADER)
        if carried is not None and self.sealer is not None:
            try:
                sender, message_id, digest = json.loads(self.sealer.open(str(carried), self._sender_context))
            except Exception:  # not sealed by this service: somebody's claim, worth nothing
                sender = message_id = digest = None
            if message_id == (msg.message_id or "") and digest == hashlib.sha256(body).hexdigest():
                return str(sender) if sender else None
        user = getattr(msg.raw_message, "user_id", None)
        return str(user) if user else None

    @property
    def _sender_context(self) -> str:
        return f"sender:{self.queues.service}"

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
            body = self.body_of(msg)
            event = self.parser(body, msg)
            handler = self.handlers.get(event.type) or self.handlers.get(ANY)
            if handler is None:
                raise MessageError("no-handler", f"{self.queues.service} does not handle {event.type}")
        except MessageError as exc:
            await self.park(msg, exc.reason, exc.detail)
            return
        except Exception as exc:  # parsing is pure: the same body fails the same way, so no retry
            log.exception("%s: could not parse a message", self.queues.inbox)
            await self.park(msg, "unparseable", f"{type(exc).__name__}: {exc}")
            return
        if (verifier := self.verifiers.get(event.type)) is not None:
            try:
                await verifier(event, self.sender_of(msg, body))
            except MessageError as exc:
                await self.park(msg, exc.reason, exc.detail)
                return
            except RETRYABLE as exc:
                await self.retry(msg, attempt, f"verifying the sender: {type(exc).__name__}: {exc}")
                return
        event_id = str(event.event_id)
        digest = digest_of(event)
        if self.inbox is not None:
            try:
                claim = await self.inbox.claim(event_id, event.type, time.time(), digest)
            except PyMongoError as exc:
                # The database is away (FerretDB paused in the chaos drill): not the message's fault,
                # so no attempt is counted, and it waits in the delay queue instead of being requeued
                # at once, which spun every prefetched message in a hot loop until the pool recovered.
                await self.retry(msg, attempt - 1, f"inbox unavailable: {type(exc).__name__}", count=False)
                return
            if claim == "done":
                self.stats["duplicates"] += 1
                return
            if claim == "conflict":
                await self._conflict(msg, event, attempt)
                return
            if claim == "busy":  # the same event is being handled right now: look again later
                await self.retry(msg, attempt - 1, "a duplicate is being handled", count=False)
                return
        try:
            handled = await self._handle(handler, event, msg, attempt)
        except BaseException:  # could not even retry or park (broker gone): free the claim for the redelivery
            if self.inbox is not None:
                with contextlib.suppress(Exception):
                    await self.inbox.release(event_id)
            raise
        if not handled:
            if self.inbox is not None:
                await self.inbox.release(event_id)
            return
        if self.inbox is not None:
            await self.inbox.done(event_id, time.time(), digest)
        self.stats["handled"] += 1

    async def _conflict(self, msg: RabbitMessage, event: Envelope[Any], attempt: int) -> None:
        """Another message with this id was handled or is being handled: this one is not a copy of it."""
        handler = self.conflict_handlers.get(event.type)
        if handler is not None:
            try:
                await handler(event)
            except Exception as exc:  # e.g. the database away: the message comes back later
                await self.retry(msg, attempt, f"telling the sender of a reused id failed: {exc}")
                return
        await self.park(
            msg,
            "message-id-reused",
            f"another message with id {event.event_id} was handled; this one differs",
        )

    async def _handle(self, handler: Handler, event: Envelope[Any], msg: RabbitMessage, attempt: int) -> bool:
        """Run the handler; on failure retry or park the message and return False."""
        try:
            await handler(event)
        except MessageError as exc:
            await self.park(msg, exc.reason, exc.detail)
            return False
        except RETRYABLE as exc:
            wait = float(getattr(exc, "retry_after", 0.0) or 0.0)
            await self.retry(msg, attempt, f"{type(exc).__name__}: {exc}", at_least=wait)
            return False
        except Exception as exc:  # a bug: retry a few times, then park it for a human
            log.exception("%s: handler for %s failed", self.queues.service, event.type)
            await self.retry(msg, attempt, f"{type(exc).__name__}: {exc}")
            return False
        return True

    def body_of(self, msg: RabbitMessage) -> bytes:
        """The message's body, opened if it is a copy this service sealed."""
        return self.open_copy(bytes(msg.body), msg.headers or {})

    def open_copy(self, body: bytes, headers: Mapping[str, Any]) -> bytes:
        return open_resting_copy(self.sealer, self.queues.service, body, headers)

    def _resting(self, msg: RabbitMessage) -> tuple[bytes, dict[str, Any]]:
        """Body and headers for a copy that rests on the broker: sealed, unless it already is (then
        its sealed sender is kept too); the sender the broker verified goes with it, sealed."""
        headers = dict(msg.headers or {})
        if self.sealer is None or headers.get(topology.SEALED_HEADER) is not None:
            return bytes(msg.body), headers
        body = bytes(msg.body)
        headers.pop(topology.SENDER_HEADER, None)
        if sender := self.sender_of(msg, body):
            bound = json.dumps([sender, msg.message_id or "", hashlib.sha256(body).hexdigest()])
            headers[topology.SENDER_HEADER] = self.sealer.seal(bound, self._sender_context)
        headers[topology.SEALED_HEADER] = "1"
        return seal_resting_copy(self.sealer, self.queues.service, body), headers

    async def retry(
        self, msg: RabbitMessage, attempt: int, detail: str, *, count: bool = True, at_least: float = 0.0
    ) -> None:
        """Copy `msg` to the delay queue of its next attempt; `at_least`: the peer asked for that
        long (Retry-After), so later steps are skipped to the first delay as long (or the last)."""
        delay = self.queues.delay_for(max(attempt + 1, 1))
        while delay is not None and delay < at_least and self.queues.delay_for(attempt + 2) is not None:
            attempt += 1
            delay = self.queues.delay_for(attempt + 1)
        if delay is None:
            await self.park(msg, "retries-exhausted", detail)
            return
        body, headers = self._resting(msg)
        headers[topology.ATTEMPT_HEADER] = max(attempt + 1, 0)
        headers[topology.DETAIL_HEADER] = redact_text(detail)[:500]
        log.warning("%s: attempt %d failed (%s); again in %ss", self.queues.inbox, attempt + 1, detail, delay)
        await self.publisher.publish_raw(
            body,
            exchange=topology.RETRY,
            routing_key=self.queues.retry_queue(delay),
            headers=headers,
            message_id=msg.message_id or None,
            correlation_id=msg.correlation_id or None,
        )
        if count:
            self.stats["retried"] += 1

    async def park(self, msg: RabbitMessage, reason: str, detail: str) -> None:
        body, headers = self._resting(msg)
        headers[topology.REASON_HEADER] = reason
        headers[topology.DETAIL_HEADER] = redact_text(detail)[:2000]
        headers[topology.SOURCE_HEADER] = self.queues.inbox
        headers["x-routing-key"] = msg.raw_message.routing_key or ""
        log.error("%s: parked a message: %s %s", self.queues.inbox, reason, detail[:200])
        await self.publisher.publish_raw(
            body,
            exchange=topology.DEAD,
            routing_key=self.queues.parking,
            headers=headers,
            message_id=msg.message_id or None,
            correlation_id=msg.correlation_id or None,
        )
        self.stats["parked"] += 1
