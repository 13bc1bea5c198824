"""Part 1, the baseline: the client libraries alone, with the settings the services use.

aio-pika publishing persistent, mandatory messages with publisher confirms into a quorum queue
(sequentially, one confirm awaited at a time, and pipelined, `window` in flight), and consuming
them one after another with manual acks (prefetch as in the services). PyMongo's AsyncMongoClient
against FerretDB: `insert_many`, and one-at-a-time `insert_one`, `find_one` by _id and
`update_one` by _id, the operations the inbox and the outbox relay make per message.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange
from pymongo import AsyncMongoClient

from bench import env
from bench.results import Figure, Run, throughput
from shared.clock import SystemClock
from shared.events import BookingAttended, Envelope, new_event
from shared.mongo import connect

PART = "baseline"
RAW_EXCHANGE = "bench.raw"
RAW_QUEUE = "bench.raw"
PREFETCH = 32  # ServiceSettings.prefetch


def sample_event(i: int = 0) -> Envelope[Any]:
    """The event the bench sends everywhere: small, realistic, registered (booking.attended)."""
    clock = SystemClock()
    return new_event(
        BookingAttended(booking_id=f"bench-{i:08d}", how="joined", at=clock.now()),
        office_id="kushiro-gyosei",
        producer="bench",
        clock=clock,
    )


def raw_message(event: Envelope[Any]) -> aio_pika.Message:
    """The same properties EventPublisher sets."""
    return aio_pika.Message(
        event.to_json(),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(event.event_id),
        correlation_id=str(event.correlation_id),
        content_type="application/json",
        type=event.type,
        timestamp=event.occurred_at,
    )


def sample_document(i: int) -> dict[str, Any]:
    """A booking-sized document with one event in its outbox (what the booking service inserts)."""
    event = sample_event(i)
    return {
        "_id": uuid.uuid4().hex,
        "office_id": "kushiro-gyosei",
        "status": "requested",
        "windows": [{"start": event.occurred_at, "end": event.occurred_at}],
        "duration_minutes": 30,
        "version": 1,
        "outbox": [event.model_dump(mode="json")],
        "outbox_sent": 0,
        "outbox_pending": True,
        "outbox_seq": 0,
    }


async def publish_pipelined(publish: Any, items: list[Any], window: int) -> float:
    """Publish with at most `window` confirms outstanding; returns the seconds taken."""
    started = time.perf_counter()
    for i in range(0, len(items), window):
        await asyncio.gather(*(publish(x) for x in items[i : i + window]))
    return time.perf_counter() - started


async def publish_sequential(publish: Any, items: list[Any]) -> float:
    started = time.perf_counter()
    for x in items:
        await publish(x)
    return time.perf_counter() - started


async def run_amqp(run: Run, amqp_url: str, messages: int, window: int) -> None:
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        ex = await ch.declare_exchange(RAW_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        q = await ch.declare_queue(RAW_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await q.bind(ex, routing_key="#")

        async def publish(m: aio_pika.Message, exchange: AbstractExchange = ex) -> None:
            await exchange.publish(m, routing_key="booking.attended", mandatory=True)

        seq = [raw_message(sample_event(i)) for i in range(max(messages // 4, 50))]
        seconds = await publish_sequential(publish, seq)
        run.add(
            throughput(
                PART,
                "amqp_publish_sequential",
                len(seq),
                seconds,
                "msg/s",
                meaning="aio-pika publish, persistent+mandatory, one confirm awaited at a time",
            )
        )
        pipe = [raw_message(sample_event(i)) for i in range(messages)]
        seconds = await publish_pipelined(publish, pipe, window)
        run.add(
            throughput(
                PART,
                "amqp_publish_pipelined",
                len(pipe),
                seconds,
                "msg/s",
                meaning=f"aio-pika publish with confirms, {window} in flight",
                window=window,
            )
        )
        total = len(seq) + len(pipe)
        seconds = await consume(conn, total)
        run.add(
            throughput(
                PART,
                "amqp_consume",
                total,
                seconds,
                "msg/s",
                meaning=f"aio-pika consume + ack one at a time, prefetch {PREFETCH}, quorum queue",
                counted=total - 1,
            )
        )


async def consume(conn: aio_pika.abc.AbstractConnection, total: int, queue: str = RAW_QUEUE) -> float:
    """Seconds from the first delivery to the last ack (start-up excluded)."""
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=PREFETCH)
    q = await ch.get_queue(queue)
    first = last = 0.0
    n = 0
    async with q.iterator() as it:
        async for msg in it:
            if n == 0:
                first = time.perf_counter()
            await msg.ack()
            n += 1
            if n >= total:
                last = time.perf_counter()
                break
    return last - first


async def run_mongo(run: Run, db_prefix: str, docs: int, singles: int) -> None:
    client: AsyncMongoClient[dict[str, Any]] = connect(env.MONGODB_URL, app_name="bench")
    try:
        db = client[f"{db_prefix}raw"]
        many_coll, ones_coll = db["many"], db["ones"]
        await many_coll.insert_one({"_id": "warm-up"})
        await ones_coll.insert_one({"_id": "warm-up"})
        batch = 500
        many = [sample_document(i) for i in range(docs)]
        started = time.perf_counter()
        for i in range(0, len(many), batch):
            await many_coll.insert_many(many[i : i + batch], ordered=False)
        seconds = time.perf_counter() - started
        run.add(
            throughput(
                PART,
                "mongo_insert_many",
                len(many),
                seconds,
                "doc/s",
                meaning=f"insert_many of booking-sized documents, {batch} a call",
            )
        )
        ones = [sample_document(i) for i in range(singles)]
        await _singles(run, ones_coll, ones, "", f"a collection growing to {singles} documents")
        # The same operations in a big collection: what a long-lived aggregate collection costs.
        await _singles(
            run, many_coll, many[:: max(1, len(many) // 10)][:10], f"_at_{docs}", f"{docs} documents"
        )
    finally:
        await client.close()


async def _singles(run: Run, coll: Any, docs: list[dict[str, Any]], suffix: str, where: str) -> None:
    if not suffix:
        started = time.perf_counter()
        for d in docs:
            await coll.insert_one(d)
        seconds = time.perf_counter() - started
        run.add(
            _per_op("mongo_insert_one", f"insert_one, one awaited at a time, {where}", len(docs), seconds)
        )
    started = time.perf_counter()
    for d in docs:
        await coll.find_one({"_id": d["_id"]}, {"_id": 1})
    seconds = time.perf_counter() - started
    run.add(
        _per_op(f"mongo_find_one{suffix}", f"find_one by _id (inbox `seen`), {where}", len(docs), seconds)
    )
    started = time.perf_counter()
    for d in docs:
        await coll.update_one({"_id": d["_id"]}, {"$set": {"outbox_sent": 1}})
    seconds = time.perf_counter() - started
    run.add(
        _per_op(f"mongo_update_one{suffix}", f"update_one, filter on _id alone, {where}", len(docs), seconds)
    )
    started = time.perf_counter()
    for d in docs:
        await coll.update_one({"_id": d["_id"], "outbox_seq": 0}, {"$set": {"outbox_pending": False}})
    seconds = time.perf_counter() - started
    meaning = f"update_one, filter on _id and one more field (the relay's conditional mark), {where}"
    run.add(_per_op(f"mongo_update_one_conditional{suffix}", meaning, len(docs), seconds))


def _per_op(name: str, meaning: str, n: int, seconds: float) -> Figure:
    return throughput(PART, name, n, seconds, "op/s", meaning=meaning, ms_per_op=round(seconds / n * 1000, 3))
