"""Audit ingest through the real broker into the real store: R10 coverage, idempotence, the chain."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aio_pika
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect

from examples import records
from services.audit.ingest import Appender
from services.audit.records import internal
from services.audit.store import AuditStore
from services.audit.verify import check_chains
from shared import topology
from shared.events import (
    BookingAttended,
    BookingCompleted,
    BookingRequested,
    DeviceRecorded,
    TimeWindow,
)
from tests import support
from tests.support import eventually
from tests.support.audit import OFFICE, T0, Audit, running_audit


@pytest.fixture
async def audit(make_settings: Callable[..., Any]) -> AsyncIterator[Audit]:
    async with running_audit(make_settings) as a:
        yield a


def requested(booking_id: str) -> BookingRequested:
    return BookingRequested(
        booking_id=booking_id,
        windows=[TimeWindow(start=T0 + timedelta(days=3), end=T0 + timedelta(days=3, hours=1))],
        duration_minutes=30,
    )


def device(booking_id: str, device_id: str = "DEV-8F2A-77C1") -> DeviceRecorded:
    return DeviceRecorded(
        booking_id=booking_id,
        portal_id="kg-portal",
        user_agent="Mozilla/5.0 (Windows NT 10.0) Teams/1.6",
        ip_address="198.51.100.23",
        device_id=device_id,
        app_version="1.6.00",
        observed_at=T0,
    )


async def test_r10_events_access_logs_device_logs_and_usage_windows_are_recorded(audit: Audit) -> None:
    start = T0 + timedelta(days=3)
    events = [
        await audit.publish(requested("b-1")),
        await audit.publish(device("b-1")),
        await audit.publish(
            records.access_logged(at=T0, request_id="r1"),
            office="-",
        ),
        await audit.publish(BookingAttended(booking_id="b-1", how="joined", at=start)),
        await audit.publish(
            BookingCompleted(booking_id="b-1", started_at=start, ended_at=start + timedelta(minutes=28))
        ),
    ]
    stored = [await audit.stored(e) for e in events]
    assert [r["kind"] for r in stored] == ["event", "device", "access", "usage", "usage"]
    assert stored[2]["actor"] == "portal:kg"
    assert stored[4]["usage_minutes"] == 28.0 and stored[4]["usage_start"] == start
    assert all(r["hash"] and r["prev_hash"] for r in stored)


async def test_r11_raw_device_values_are_sealed_never_stored_in_the_clear(audit: Audit) -> None:
    event = await audit.publish(device("b-2", device_id="DEV-SECRET-0042"))
    record = await audit.stored(event)
    everything = json.dumps(await audit.service.store.records.find({}).to_list(), default=str)
    assert "DEV-SECRET-0042" not in everything and "198.51.100.23" not in everything
    assert record["device_key"] == audit.service.pseudonymise("device", "DEV-SECRET-0042")
    sealed = await audit.service.store.sealed.find_one({"_id": record["_id"]})
    assert sealed is not None and b"DEV-SECRET-0042" not in bytes(sealed["ciphertext"])
    opened = audit.service.sealer.open(sealed, record["_id"])
    assert opened["device_id"] == "DEV-SECRET-0042" and opened["ip_address"] == "198.51.100.23"


async def test_audit_same_event_delivered_three_times_is_stored_once(audit: Audit) -> None:
    event = audit.event(requested("b-3"))
    for _ in range(3):
        await audit.publish(event)
    later = await audit.publish(requested("b-4"))
    await audit.stored(later)
    await eventually(lambda: _settled(audit, 4), what="all four deliveries handled")
    assert await audit.count({"_id": str(event.event_id)}) == 1
    assert await audit.count() == 2
    report = await audit.verify()
    assert report["ok"], report
    seqs = sorted(r["seq"] for r in await audit.service.store.records.find({"stream": OFFICE}).to_list())
    assert seqs == [1, 2]  # no hole where a duplicate was dropped


async def _settled(audit: Audit, deliveries: int) -> bool:
    return bool(audit.service.runtime.consumer.stats["handled"] >= deliveries)


async def test_audit_a_failed_write_is_retried_not_acknowledged(
    audit: Audit, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = audit.service.store
    real = store.insert_chained
    failures = [AutoReconnect("connection to the database lost")]

    async def flaky(docs: Any) -> tuple[int, int | None]:
        if failures:
            raise failures.pop()
        return await real(docs)

    monkeypatch.setattr(store, "insert_chained", flaky)
    event = await audit.publish(requested("b-5"))
    await audit.stored(event, timeout=20)
    assert audit.service.runtime.consumer.stats["retried"] == 1
    assert await audit.count({"_id": str(event.event_id)}) == 1


async def test_audit_an_unknown_event_type_is_recorded_not_parked(audit: Audit) -> None:
    body = audit.event(requested("b-6")).model_dump(mode="json")
    body.update(type="portal.feedback_given", payload={"booking_id": "b-6", "ip_address": "192.0.2.9"})
    await audit.service.runtime.publisher.publish_raw(
        json.dumps(body).encode(), exchange=topology.EVENTS, routing_key="portal.feedback_given", headers={}
    )

    async def probe() -> dict[str, Any] | None:
        return await audit.service.store.records.find_one({"type": "portal.feedback_given"})

    record = await eventually(probe, what="the unknown event recorded")
    assert record["booking_id"] == "b-6" and "192.0.2.9" not in json.dumps(record, default=str)
    assert record["ip_key"] and record["sealed"] is True


async def test_audit_two_writers_on_one_stream_cannot_fork_the_chain(audit: Audit) -> None:
    """Two replicas appending to the same stream at once: the unique (stream, seq) serialises them."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(support.MONGODB_URL, tz_aware=True)
    try:
        other = AuditStore(client[audit.settings.database("audit")])
        svc = audit.service
        writers = [
            Appender(svc.store, svc.keys.chain, svc.sealer),
            Appender(other, svc.keys.chain, svc.sealer),
        ]

        async def write(w: Appender, name: str) -> None:
            for i in range(8):
                batch = [
                    internal("test.write", actor=name, details={"i": i, "j": j}, now=T0, stream=OFFICE)
                    for j in range(10)
                ]
                await w.append(batch)

        await asyncio.gather(write(writers[0], "a"), write(writers[1], "b"))
    finally:
        await client.close()
    assert await audit.count({"stream": OFFICE}) == 160
    report = (await check_chains(svc.store, svc.keys.chain, OFFICE)).to_dict()
    assert report["ok"], report["first_problem"]
    assert report["streams"][0]["last_seq"] == 160


async def test_audit_an_already_recorded_event_early_in_a_large_batch_leaves_no_gap(audit: Audit) -> None:
    """A redelivered event at position 10 of 250: the rest go in right after the chain's end.

    FerretDB writes an ordered insert in batches of 100 and goes on with the later batches after a
    refusal; in one insert of all 250, records 100..249 landed behind a gap (seen in the chaos drill).
    """
    svc = audit.service

    def entry(i: int) -> Any:
        return internal("test.write", actor="a", details={"i": i}, now=T0, stream=OFFICE)

    first = [entry(i) for i in range(3)]
    await svc.appender.append(first)
    batch = [entry(i) for i in range(3, 252)]
    batch.insert(10, first[1])
    await svc.appender.append(batch)
    assert svc.appender.stats.duplicates == 1
    assert await audit.count({"stream": OFFICE}) == 252
    report = (await check_chains(svc.store, svc.keys.chain, OFFICE)).to_dict()
    assert report["ok"], report["first_problem"]
    assert report["streams"][0]["last_seq"] == 252


@pytest.mark.slow
async def test_audit_ingest_rate_through_the_broker(audit: Audit) -> None:
    """Figure for the report: events/s from publish to stored, duplicates and 3 offices mixed in."""
    n = 3000
    offices = ("kushiro-gyosei", "hw-kohoku", "-")
    events = [audit.event(requested(f"r-{i}"), office=offices[i % 3]) for i in range(n)]
    started = time.perf_counter()
    for i in range(0, n, 200):
        await asyncio.gather(*(audit.publish(e) for e in events[i : i + 200]))
    await asyncio.gather(*(audit.publish(e) for e in events[:300]))  # redelivered
    await eventually(lambda: _count_is(audit, n), timeout=120, interval=0.2, what=f"{n} records")
    elapsed = time.perf_counter() - started
    stats = audit.service.appender.stats
    print(
        f"\naudit ingest: {n} events (+300 duplicates) in {elapsed:.1f}s = {n / elapsed:.0f} events/s; "
        f"{stats.batches} batches, largest {stats.largest_batch}"
    )
    await eventually(lambda: _settled(audit, n), timeout=30, what="every delivery acknowledged")
    assert await audit.count() == n
    assert audit.service.runtime.consumer.stats["parked"] == 0
    assert (await audit.verify())["ok"]


async def _count_is(audit: Audit, n: int) -> bool:
    return await audit.count() >= n


async def test_audit_a_head_never_moves_back(audit: Audit) -> None:
    """A slower writer saving an older head (the other replica is further on) changes nothing."""
    store = audit.service.store
    await store.save_heads({"s1": (5, "h5")})
    await store.save_heads({"s1": (3, "h3"), "s2": (1, "h1")})
    assert await store.head("s1") == {"_id": "s1", "seq": 5, "hash": "h5"}
    assert await store.head("s2") == {"_id": "s2", "seq": 1, "hash": "h1"}


async def test_audit_parks_what_is_not_an_event_with_its_reason(audit: Audit) -> None:
    cases = {
        b"\xff\xfe{{{": "invalid-event",
        json.dumps({"type": "booking.requested", "payload": {"x": 1}}).encode(): "invalid-event",
        json.dumps({"type": "booking.teleported", "event_id": "e-1"}).encode(): "unknown-event-type",
    }
    for body in cases:
        await audit.service.runtime.publisher.publish_raw(
            body, exchange=topology.EVENTS, routing_key="x.y", headers={}
        )
    connection = await aio_pika.connect(audit.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        parking = await channel.get_queue(topology.AUDIT.parking)

        async def parked() -> dict[bytes, str]:
            while (msg := await parking.get(no_ack=True, fail=False)) is not None:
                assert msg.body not in cases  # R12: the parked copy is sealed; the audit service opens it
                body = audit.service.runtime.consumer.open_copy(msg.body, msg.headers or {})
                found[body] = str((msg.headers or {})[topology.REASON_HEADER])
            return found if len(found) == len(cases) else {}

        found: dict[bytes, str] = {}
        assert await eventually(parked, what="three parked messages") == cases
    assert await audit.count() == 0
