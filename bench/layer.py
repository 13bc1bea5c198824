"""Part 1b, the project's layer over the same servers: EventPublisher, Consumer, the outbox relays.

Each figure names the baseline figure it is divided by, so the ratio is the share of the raw
client's speed that survives the framework (1.0: no overhead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika

from bench import env
from bench.baseline import (
    PREFETCH,
    consume,
    publish_pipelined,
    publish_sequential,
    raw_message,
    sample_document,
    sample_event,
)
from bench.results import Figure, Run, throughput
from shared import topology
from shared.events import BookingAttended, Envelope, parse_event
from shared.mongo import connect
from shared.runtime import Runtime
from shared.settings import ServiceSettings
from shared.store import outbox
from shared.store.conditional import update_if
from shared.store.outbox import MarkedRelay, OutboxRelay

PART = "layer"
PUB = topology.ServiceQueues("benchpub")
SUB = topology.ServiceQueues("benchsub", events=("booking.attended",))
SINK = "bench.sink"


def settings(box: env.Sandbox) -> ServiceSettings:
    return ServiceSettings(
        environment="test",
        amqp_url=box.amqp_url,
        mongodb_url=env.MONGODB_URL,
        smtp_url=env.SMTP_URL,
        db_prefix=box.db_prefix,
        outbox_poll_seconds=0.2,
        log_level="WARNING",  # the bench prints its own progress; the runtimes' INFO lines are noise
    )


@asynccontextmanager
async def channel(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        yield await conn.channel(publisher_confirms=True, on_return_raises=True)


async def bind_sink(amqp_url: str) -> None:
    """A queue that takes the bench's events, so mandatory publishes are routable."""
    async with channel(amqp_url) as ch:
        await topology.declare_exchanges(ch)
        q = await ch.declare_queue(SINK, durable=True, arguments={"x-queue-type": "quorum"})
        await q.bind(topology.EVENTS, routing_key="booking.attended")
        await q.purge()


async def delete_queue(amqp_url: str, name: str) -> None:
    async with channel(amqp_url) as ch:
        await ch.queue_delete(name)


async def prefill(amqp_url: str, events: list[Envelope[Any]], window: int = 200) -> None:
    """Put events in the consumer's inbox through the raw client (not timed)."""
    async with channel(amqp_url) as ch:
        ex = await ch.get_exchange(topology.EVENTS)

        async def publish(e: Envelope[Any]) -> None:
            await ex.publish(raw_message(e), routing_key=e.type, mandatory=True)

        await publish_pipelined(publish, events, window)


class Clocked:
    """Times the first and the n-th call of a handler, so start-up is not counted."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    async def __call__(self, event: Envelope[Any]) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += 1
        if self.count >= self.expected:
            self.last = now
            self.done.set()

    @property
    def seconds(self) -> float:
        return self.last - self.first


async def measure_publish(runtime: Runtime, events: list[Envelope[Any]], window: int) -> float:
    publish: Callable[[Envelope[Any]], Awaitable[None]] = runtime.publisher.publish
    if window <= 1:
        return await publish_sequential(publish, events)
    return await publish_pipelined(publish, events, window)


async def measure_consume(box: env.Sandbox, n: int, *, dedupe: bool, timeout: float = 300) -> float:
    """Seconds for the project's Consumer to handle n prefilled events (first to last)."""
    await _prefilled(box, n)
    runtime = Runtime(settings(box), SUB)
    if not dedupe:
        runtime.consumer.inbox = None
    clocked = Clocked(n)
    runtime.consumer.on(BookingAttended)(clocked)
    async with runtime.running():
        await asyncio.wait_for(clocked.done.wait(), timeout)
    return clocked.seconds


#: raw and layer measured in turn this many times: on a shared machine the load changes from one
#: second to the next, so a ratio of figures taken minutes apart says more about the load than the layer
ROUNDS = 3


async def consume_raw(amqp_url: str, queue: str, n: int, timeout: float = 300) -> float:
    """Seconds for aio-pika alone to take n prefilled messages from `queue`, as `baseline.consume`."""
    conn = await aio_pika.connect(amqp_url)
    async with conn, asyncio.timeout(timeout):
        return await consume(conn, n, queue)


def _paired(
    name: str, n: int, seconds: list[float], raw_seconds: list[float], *, meaning: str, raw: str
) -> Figure:
    """A layer figure over all rounds, with each round's ratio to the raw figure taken next to it."""
    rounds = [round(r / s, 3) if s > 0 else None for s, r in zip(seconds, raw_seconds, strict=True)]
    return throughput(
        PART,
        name,
        n * len(seconds),
        sum(seconds),
        "msg/s",
        meaning=meaning,
        baseline=f"{PART}/{raw}",
        counted=(n - 1) * len(seconds) if name.startswith("consume") else None,
        round_ratios=rounds,
    )


async def run(run_: Run, box: env.Sandbox, messages: int, window: int, docs: int) -> None:
    """Publish and consume, each in ROUNDS rounds of raw aio-pika then the project's layer, on the
    same exchange and queues: the ratios are to the raw figures measured in turn with them."""
    await bind_sink(box.amqp_url)
    runtime = Runtime(settings(box), PUB)
    sequential = max(messages // 4, 50)
    times: dict[str, list[float]] = {k: [] for k in ("raw_seq", "seq", "raw_pipe", "pipe")}
    async with runtime.running(), channel(box.amqp_url) as ch:
        exchange = await ch.get_exchange(topology.EVENTS)

        async def raw(message: aio_pika.Message) -> None:
            await exchange.publish(message, routing_key="booking.attended", mandatory=True)

        for _ in range(ROUNDS):
            messages_ = [raw_message(sample_event(i)) for i in range(sequential)]
            times["raw_seq"].append(await publish_sequential(raw, messages_))
            events = [sample_event(i) for i in range(sequential)]
            times["seq"].append(await measure_publish(runtime, events, 1))
            messages_ = [raw_message(sample_event(i)) for i in range(messages)]
            times["raw_pipe"].append(await publish_pipelined(raw, messages_, window))
            events = [sample_event(i) for i in range(messages)]
            times["pipe"].append(await measure_publish(runtime, events, window))
    raw_meaning = "aio-pika alone, prebuilt messages, persistent+mandatory, confirms, to the same exchange"
    for key, name, n, what in (
        ("seq", "publish_sequential", sequential, "one at a time"),
        ("pipe", "publish_pipelined", messages, f"{window} in flight"),
    ):
        run_.add(
            throughput(
                PART, f"raw_{name}", n * ROUNDS, sum(times[f"raw_{key}"]), "msg/s",
                meaning=f"{raw_meaning}, {what}, measured in turn with the next figure",
                baseline=f"baseline/amqp_{name}",
            )
        )  # fmt: skip
        run_.add(
            _paired(
                name, n, times[key], times[f"raw_{key}"],
                meaning=f"EventPublisher.publish (aio-pika on the broker's channel, confirms), {what}",
                raw=f"raw_{name}",
            )
        )  # fmt: skip
    await delete_queue(box.amqp_url, SINK)

    consumed: dict[str, list[float]] = {"raw": [], "inbox": [], "no_inbox": []}
    for _ in range(ROUNDS):
        await _prefilled(box, messages)
        consumed["raw"].append(await consume_raw(box.amqp_url, SUB.inbox, messages))
        for dedupe in (True, False):
            consumed["inbox" if dedupe else "no_inbox"].append(
                await measure_consume(box, messages, dedupe=dedupe)
            )
    run_.add(
        throughput(
            PART, "raw_consume", messages * ROUNDS, sum(consumed["raw"]), "msg/s",
            meaning=f"aio-pika alone consuming the Consumer's own inbox queue, ack one at a time, prefetch "
            f"{PREFETCH}, measured in turn with the next two figures",
            baseline="baseline/amqp_consume", counted=(messages - 1) * ROUNDS,
        )
    )  # fmt: skip
    for key, name, what in (
        ("inbox", "consume", "parse + inbox claim and done marker (grouped inserts) + handler + ack"),
        ("no_inbox", "consume_no_inbox", "the same without the inbox (parse + handler + ack)"),
    ):
        run_.add(
            _paired(
                name, messages, consumed[key], consumed["raw"], meaning=f"Consumer: {what}", raw="raw_consume"
            )
        )
    await delete_queue(box.amqp_url, SUB.inbox)
    await run_outbox(run_, box, docs)


async def _prefilled(box: env.Sandbox, n: int) -> None:
    """The Consumer's inbox queue, declared and empty, then n events in it."""
    async with channel(box.amqp_url) as ch:
        await topology.declare_service(ch, SUB)
        await (await ch.get_queue(SUB.inbox)).purge()
    await prefill(box.amqp_url, [sample_event(i) for i in range(n)])


async def run_outbox(run_: Run, box: env.Sandbox, docs: int) -> None:
    await bind_sink(box.amqp_url)
    runtime = Runtime(settings(box), PUB)
    client = connect(env.MONGODB_URL, app_name="bench")
    db = client[f"{box.db_prefix}benchpub"]
    try:
        async with runtime.running():
            # 1. the relay the services use: announced documents already written, the relay drains them
            relay = MarkedRelay(db["outbox"], runtime.publisher, poll_seconds=0.2)
            marked = (
                "MarkedRelay draining announced documents (markers, find by _id, publish, "
                "insert the sent id, delete the marker)"
            )
            run_.add(
                await _drained(relay, docs, "outbox_relay_only", marked, "baseline/amqp_publish_sequential")
            )
            # 2. the flag-based relay (marks each document: an update), still used for carrier documents
            flagged = OutboxRelay(db["outbox_flagged"], runtime.publisher, poll_seconds=0.2)
            await flagged.ensure_indexes()
            same = (
                "the same drain with the flag-based OutboxRelay (update_one per document); "
                "ratio to the relay the services use"
            )
            run_.add(
                await _drained(flagged, docs, "outbox_relay_only_flagged", same, "layer/outbox_relay_only")
            )
            # 3. written one by one as a route does (announce + insert_one + poke), relayed as they come
            coll = db["outbox_live"]
            relay = MarkedRelay(coll, runtime.publisher, poll_seconds=0.2)
            relay.start()
            started = time.perf_counter()
            for i in range(docs):
                events = [sample_event(i)]
                await outbox.announce(coll, f"w{i}", events)
                await coll.insert_one(
                    {"_id": f"w{i}", "status": "requested", **outbox.new_document_fields(events)}
                )
                relay.poke(f"w{i}")
            written = time.perf_counter() - started
            await _until(lambda: relay.published >= docs)
            seconds = time.perf_counter() - started
            await relay.stop()
            run_.add(
                throughput(
                    PART,
                    "outbox_write_and_relay",
                    docs,
                    seconds,
                    "doc/s",
                    meaning="documents with one event announced, written by insert_one (+poke) and relayed, "
                    "until all published",
                    baseline="baseline/mongo_insert_one",
                    write_seconds=round(written, 3),
                )
            )
    finally:
        await client.close()
        await delete_queue(box.amqp_url, SINK)


async def run_conditional(run_: Run, box: env.Sandbox, docs: int) -> None:
    """`shared.store.conditional.update_if` on the baseline's big collection, against the raw conditional
    `update_one({_id, outbox_seq})` the baseline measured on the same documents."""
    client = connect(env.MONGODB_URL, app_name="bench-layer")
    try:
        coll = client[f"{box.db_prefix}raw"]["many"]
        ids = [d["_id"] async for d in coll.find({"_id": {"$ne": "warm-up"}}, {"_id": 1})]
        picked = ids[:: max(1, len(ids) // 10)][:10]  # the baseline's documents, spread over the table
        started = time.perf_counter()
        for doc_id in picked:
            await update_if(coll, doc_id, {"outbox_seq": 0}, {"$set": {"outbox_sent": 2}})
        seconds = time.perf_counter() - started
        run_.add(
            throughput(
                PART,
                f"update_if_at_{docs}",
                len(picked),
                seconds,
                "op/s",
                meaning=f"update_if (conditional write by _id alone: read, check, write), {docs} documents",
                baseline=f"baseline/mongo_update_one_conditional_at_{docs}",
            )
        )
    finally:
        await client.close()


async def _drained(relay: OutboxRelay, docs: int, name: str, meaning: str, baseline: str) -> Figure:
    """How fast the relay, from its start, publishes `docs` documents written before it (announced
    for a `MarkedRelay`); the relay is stopped afterwards."""
    batch = [sample_document(i) for i in range(docs)]
    if isinstance(relay, MarkedRelay):
        for d in batch:
            await outbox.announce(relay.collection, d["_id"], [parse_event(d["outbox"][0])])
    await relay.collection.insert_many(batch)
    started = time.perf_counter()
    relay.start()
    await _until(lambda: relay.published >= docs)
    seconds = time.perf_counter() - started
    await relay.stop()
    return throughput(PART, name, docs, seconds, "doc/s", meaning=meaning, baseline=baseline)


async def _until(probe: Callable[[], bool], timeout: float = 300, interval: float = 0.005) -> None:
    deadline = time.perf_counter() + timeout
    while not probe():
        if time.perf_counter() > deadline:
            raise TimeoutError("bench: condition not reached")
        await asyncio.sleep(interval)
