"""The consumer runtime and outbox relay against a real RabbitMQ and a real MongoDB-wire server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aio_pika
import httpx
import pytest
from pymongo import AsyncMongoClient

from ops.broker_cli import OpsSettings, _replay
from shared import topology
from shared.events import BookingAttended, Envelope, MessageError
from shared.messaging import Inbox, TransientError
from shared.runtime import Runtime
from shared.sealing import SealError, SecretSealer
from shared.settings import ServiceSettings
from shared.store import outbox
from shared.store.versioned import Conflict, VersionedStore
from tests import support
from tests.support import eventually

QUEUES = topology.ServiceQueues(
    "probe", events=("booking.attended",), intake=("probe.raw",), retry_delays=(1, 1)
)


async def _publish(amqp_url: str, body: bytes, routing_key: str, exchange: str = topology.EVENTS) -> None:
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        ch = await conn.channel()
        ex = await ch.get_exchange(exchange)
        await ex.publish(aio_pika.Message(body, delivery_mode=2), routing_key=routing_key, mandatory=True)


async def _parked(amqp_url: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    conn = await aio_pika.connect(amqp_url)
    out = []
    async with conn:
        ch = await conn.channel()
        q = await ch.get_queue(QUEUES.parking)
        while (m := await q.get(fail=False)) is not None:
            out.append(m)
            await m.ack()
    return out


def _event(runtime: Runtime, booking_id: str = "b1") -> Envelope[Any]:
    return runtime.event(
        BookingAttended(booking_id=booking_id, how="joined", at=runtime.clock.now()), "office-x"
    )


async def test_handled_event_is_marked_and_a_duplicate_is_not_handled_again(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    seen: list[str] = []

    @runtime.consumer.on(BookingAttended)
    async def handle(event: Envelope[Any]) -> None:
        seen.append(str(event.event_id))

    async with runtime.running():
        event = _event(runtime)
        # ten copies at once: they are consumed concurrently (prefetch), yet handled once
        await asyncio.gather(*(runtime.publisher.publish(event) for _ in range(10)))
        await eventually(lambda: _settled(runtime, 10), what="ten deliveries settled")
    assert seen == [str(event.event_id)]
    assert runtime.consumer.stats["duplicates"] == 9


def _recording(settings: ServiceSettings) -> tuple[Runtime, list[str]]:
    """A runtime whose one handler records the booking id of every booking.attended it handles."""
    runtime = Runtime(settings, QUEUES)
    handled: list[str] = []

    @runtime.consumer.on(BookingAttended)
    async def handle(event: Envelope[Any]) -> None:
        handled.append(event.payload.booking_id)

    return runtime, handled


async def _settled(runtime: Runtime, n: int) -> bool:
    s = runtime.consumer.stats
    return s["handled"] + s["duplicates"] + s["parked"] >= n


async def test_unreadable_message_is_parked_with_its_reason_and_the_consumer_goes_on(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    runtime, handled = _recording(make_settings(ServiceSettings))

    async with runtime.running():
        await _publish(amqp_url, b"\xff\xfe{not json", "probe.raw", topology.INTAKE)
        await _publish(amqp_url, json.dumps({"type": "booking.exploded"}).encode(), "booking.attended")
        await runtime.publisher.publish(_event(runtime, "after-poison"))
        await eventually(lambda: _settled(runtime, 3), what="poison parked and good event handled")
    parked = await _parked(amqp_url)
    reasons = sorted(str(m.headers[topology.REASON_HEADER]) for m in parked)
    assert reasons == ["invalid-event", "unknown-event-type"]
    assert all(m.headers[topology.SOURCE_HEADER] == QUEUES.inbox for m in parked)
    assert handled == ["after-poison"]


async def test_transient_failure_is_retried_through_the_delay_queue(
    make_settings: Callable[..., ServiceSettings],
) -> None:
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    attempts: list[int] = []

    @runtime.consumer.on(BookingAttended)
    async def handle(event: Envelope[Any]) -> None:
        attempts.append(1)
        if len(attempts) < 2:
            raise TransientError("peer down")

    async with runtime.running():
        await runtime.publisher.publish(_event(runtime))
        await eventually(lambda: _handled(runtime), timeout=10, what="retried delivery handled")
    assert len(attempts) == 2
    assert runtime.consumer.stats["retried"] == 1


async def _handled(runtime: Runtime) -> bool:
    return runtime.consumer.stats["handled"] >= 1


async def test_retries_exhausted_and_domain_errors_are_parked(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)

    @runtime.consumer.on(BookingAttended)
    async def handle(event: Envelope[Any]) -> None:
        if event.payload.booking_id == "always-down":
            raise TransientError("still down")
        raise MessageError("illegal-transition", "booking already cancelled")

    async with runtime.running():
        await runtime.publisher.publish(_event(runtime, "always-down"))
        await runtime.publisher.publish(_event(runtime, "refused"))
        await eventually(lambda: _parked_count(runtime, 2), timeout=15, what="two parked")
    reasons = sorted(str(m.headers[topology.REASON_HEADER]) for m in await _parked(amqp_url))
    assert reasons == ["illegal-transition", "retries-exhausted"]


async def _parked_count(runtime: Runtime, n: int) -> bool:
    return runtime.consumer.stats["parked"] >= n


async def test_outbox_relay_publishes_pending_events_once_and_clears_the_flag(
    make_settings: Callable[..., ServiceSettings], mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    settings = make_settings(ServiceSettings)
    runtime, received = _recording(settings)

    things = runtime.db["things"]
    relay = runtime.relay(things)
    async with runtime.running():
        await things.insert_one({"_id": "a", **outbox.new_document_fields([_event(runtime, "a1")])})
        await things.update_one({"_id": "a"}, outbox.merge({"$set": {"state": "x"}}, [_event(runtime, "a2")]))
        relay.poke()
        await eventually(lambda: _count(received, 2), what="both outbox events consumed")
        doc = await things.find_one({"_id": "a"})
        assert doc is not None
        assert doc["outbox_pending"] is False
        assert doc["outbox_sent"] == 2
        assert await relay.backlog() == 0
        assert await relay.drain_once() == 0  # a further round must not republish
    assert sorted(received) == ["a1", "a2"]  # published in order; consumed concurrently (prefetch)


async def _count(items: list[str], n: int) -> bool:
    return len(items) >= n


async def test_unroutable_publish_raises_and_the_event_stays_in_the_outbox(
    make_settings: Callable[..., ServiceSettings],
) -> None:
    lonely = topology.ServiceQueues("lonely", events=("nothing.here",))
    runtime = Runtime(make_settings(ServiceSettings), lonely)
    things = runtime.db["things"]
    relay = runtime.relay(things)
    async with runtime.running():
        await things.insert_one({"_id": "u", **outbox.new_document_fields([_event(runtime, "u1")])})
        try:
            await relay.drain_once()
        except Exception as exc:
            assert "NO_ROUTE" in str(exc)
        else:
            raise AssertionError("an unroutable publish must raise")
        assert await relay.backlog() == 1


async def test_the_same_unroutable_event_published_twice_at_once_raises_both_times(
    make_settings: Callable[..., ServiceSettings],
) -> None:
    """aiormq matches a returned message to its publish by message id: two publishes of one event at
    once on one channel made the first look confirmed (its return went to the second), so a relay
    racing another drain marked an unroutable event sent (found when this module's outbox test failed
    under load). The publisher sends one message id at a time."""
    lonely = topology.ServiceQueues("lonely2", events=("nothing.here",))
    runtime = Runtime(make_settings(ServiceSettings), lonely)
    async with runtime.running():
        event = _event(runtime, "twice")
        results = await asyncio.gather(
            *(runtime.publisher.publish(event) for _ in range(3)), return_exceptions=True
        )
    assert all(isinstance(r, Exception) and "NO_ROUTE" in str(r) for r in results), results


async def test_inbox_claims_once_takes_over_an_expired_claim_and_finishes_with_an_insert(
    mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str
) -> None:
    inbox = Inbox(mongo[f"{db_prefix}_inbox_probe"]["inbox"], lease_seconds=60)
    assert await inbox.claim("e1", "booking.attended", now=100.0) == "new"
    assert await inbox.claim("e1", "booking.attended", now=101.0) == "busy"  # held by the first
    assert not await inbox.seen("e1")
    # the holder crashed: after the lease, exactly one of two redeliveries takes the claim over
    takers = await asyncio.gather(*(inbox.claim("e1", "booking.attended", now=200.0) for _ in range(5)))
    assert sorted(takers) == ["busy"] * 4 + ["new"]
    assert await inbox.claim("e1", "booking.attended", now=201.0) == "busy"  # renewed by the taker
    await inbox.done("e1", now=201.0)
    await inbox.done("e1", now=202.0)  # a second finish (taken-over claim) is harmless
    assert await inbox.seen("e1")
    assert await inbox.claim("e1", "booking.attended", now=999.0) == "done"
    # a failed handler releases its claim and the next delivery starts afresh
    assert await inbox.claim("e2", "booking.attended", now=300.0) == "new"
    await inbox.release("e2")
    assert await inbox.claim("e2", "booking.attended", now=301.0) == "new"
    docs = {d["_id"]: d async for d in inbox.collection.find({})}
    assert set(docs) == {"e1", "e1#taken#100.0", "e1#done", "e2"}


async def test_inbox_claims_and_done_markers_in_flight_together_share_rounds_and_keep_their_outcomes(
    mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str
) -> None:
    """A prefetch window's claims reach the server as one insert_many per round, yet each claim answers
    as its own unique insert would: one `new` per event id, even for copies inside one round."""
    inbox = Inbox(mongo[f"{db_prefix}_inbox_rounds"]["inbox"], lease_seconds=60)
    ids = [f"r{i}" for i in range(30)] + ["twice"] * 5
    claims = await asyncio.gather(*(inbox.claim(i, "booking.attended", now=100.0) for i in ids))
    assert claims[:30] == ["new"] * 30
    assert sorted(claims[30:]) == ["busy"] * 4 + ["new"]  # the copies of one event: one holder
    assert inbox.inserts.sent_rounds < len(ids) / 4  # shared rounds, not one insert per claim
    await asyncio.gather(*(inbox.done(i, now=101.0) for i in ids))  # a done twice is harmless too
    assert all(await asyncio.gather(*(inbox.seen(i) for i in ids)))
    again = await asyncio.gather(*(inbox.claim(i, "booking.attended", now=102.0) for i in ids))
    assert set(again) == {"done"}
    assert await inbox.collection.count_documents({}) == 31 * 2


async def test_a_claim_whose_delivery_was_cancelled_on_the_way_is_released_when_it_lands(
    mongo: AsyncMongoClient[dict[str, Any]], db_prefix: str
) -> None:
    """A delivery cut off (connection dropped) while its claim was queued for the next round: the
    claim still lands, nobody holds it, so it is freed and the redelivery is handled at once instead
    of waiting `lease_seconds` as `busy`."""
    inbox = Inbox(mongo[f"{db_prefix}_inbox_cut"]["inbox"], lease_seconds=600)
    holder = asyncio.ensure_future(inbox.claim("cut", "booking.attended", now=100.0))
    other = asyncio.ensure_future(inbox.claim("kept", "booking.attended", now=100.0))
    await asyncio.sleep(0)  # both queued for the round
    holder.cancel()
    assert await other == "new"  # the round went out with both claims
    with pytest.raises(asyncio.CancelledError):
        await holder

    async def freed() -> bool:
        return await inbox.collection.find_one({"_id": "cut"}) is None

    await eventually(freed, what="the abandoned claim released")
    assert await inbox.claim("cut", "booking.attended", now=101.0) == "new"
    assert await inbox.claim("kept", "booking.attended", now=101.0) == "busy"  # a held claim stays


async def _tap(
    amqp_url: str, runtime: Runtime
) -> tuple[aio_pika.abc.AbstractConnection, aio_pika.abc.AbstractQueue]:
    """A queue of the test's own on booking.attended (declared before the relay starts)."""
    await runtime.declare()
    conn = await aio_pika.connect(amqp_url)
    tap = await (await conn.channel()).declare_queue(exclusive=True)
    await tap.bind(topology.EVENTS, "booking.attended")
    return conn, tap


async def _drain_tap(tap: aio_pika.abc.AbstractQueue, got: list[str]) -> None:
    while (m := await tap.get(fail=False)) is not None:
        got.append(json.loads(m.body)["payload"]["booking_id"])
        await m.ack()


async def _tap_until(tap: aio_pika.abc.AbstractQueue, got: list[str], n: int, what: str) -> None:
    """Drain the tap into `got` until it holds at least `n` events."""

    async def enough() -> bool:
        await _drain_tap(tap, got)
        return len(got) >= n

    await eventually(enough, what=what)


async def test_marked_relay_publishes_each_change_once_in_version_order_and_never_updates_it(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    changes = runtime.db["changes"]
    relay = runtime.marked_relay(changes)
    conn, tap = await _tap(amqp_url, runtime)
    async with conn, runtime.running():
        written = []
        for v in (1, 2, 3):  # what VersionedStore.commit does: announce, then insert the change
            cid, events = f"agg:{v:08d}", [_event(runtime, f"v{v}")]
            await outbox.announce(changes, cid, events)
            doc = {"_id": cid, **outbox.new_document_fields(events)}
            await changes.insert_one(doc)
            written.append(doc)
            relay.poke(cid)
        await outbox.announce(changes, "agg:00000004", [_event(runtime, "v4")])  # crashed before its insert
        got: list[str] = []
        await _tap_until(tap, got, 3, "the three changes published")
        assert got == ["v1", "v2", "v3"]  # one aggregate's changes in version order
        assert await changes.find({}).sort("_id", 1).to_list() == written  # never written by the relay
        assert await relay.backlog() == 1  # the orphan waits out its grace period
        relay.grace_seconds = 0
        await relay.drain_once()
        assert await relay.backlog() == 0
        await relay.drain_once()  # a further round: whatever it published is in the tap (confirmed)
        await _drain_tap(tap, got)
        assert got == ["v1", "v2", "v3"]  # nothing republished


async def test_marked_relay_leaves_a_changing_document_to_its_writer_and_loses_no_append(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    """Appends racing the relay: each event out once, and the relay never writes the document."""
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    things = runtime.db["things"]
    relay = runtime.marked_relay(things)
    conn, tap = await _tap(amqp_url, runtime)
    async with conn, runtime.running():
        first = [_event(runtime, "e0")]
        await outbox.announce(things, "a", first)
        await things.insert_one({"_id": "a", "rev": 0, **outbox.new_document_fields(first)})
        relay.poke("a")
        for i in range(1, 20):  # the writer appends while the relay publishes
            events = [_event(runtime, f"e{i}")]
            await outbox.announce(things, "a", events)
            await things.update_one({"_id": "a"}, outbox.merge({"$inc": {"rev": 1}}, events))
            relay.poke("a")
        lost = [_event(runtime, "never")]  # a conditional update that lost its race: never written
        await outbox.announce(things, "a", lost)
        got: list[str] = []
        await _tap_until(tap, got, 20, "twenty appends published")
        doc = await things.find_one({"_id": "a"})
        assert doc is not None and doc["rev"] == 19 and len(doc["outbox"]) == 20
        assert doc["outbox_sent"] == 0  # the relay never wrote to it

        # the relay deletes a settled marker after the broker's confirm, so the tap can see the last
        # event first (a fresh-clone run under load did): wait for it, then only the lost one is left
        async def settled_but_the_lost_one() -> bool:
            return await relay.backlog() == 1

        await eventually(settled_but_the_lost_one, what="every marker settled but the lost write's")
        assert await relay.backlog() == 1  # only the lost write's marker, until its grace period
        assert await outbox.withdraw(things, "a", lost)  # its writer knows it lost: gone at once
        assert await relay.backlog() == 0
        landed = [_event(runtime, "e20")]  # a write reported refused that had in fact landed
        await outbox.announce(things, "a", landed)
        await things.update_one({"_id": "a"}, outbox.merge({"$inc": {"rev": 1}}, landed))
        assert not await outbox.withdraw(things, "a", landed)  # its events are in the document
        relay.poke("a")
        await _tap_until(tap, got, 21, "the landed write's event published")
        await eventually(lambda: _backlog_is(relay, 0), what="the landed write's marker settled")
        await relay.drain_once()  # a further round: whatever it published is in the tap (confirmed)
        await _drain_tap(tap, got)
    assert got == [f"e{i}" for i in range(21)]  # in order, once each


async def _backlog_is(relay: outbox.OutboxRelay, n: int) -> bool:
    return await relay.backlog() == n


async def test_a_versioned_commit_that_loses_its_version_leaves_no_marker_behind(
    make_settings: Callable[..., ServiceSettings],
) -> None:
    """Two writers of one aggregate's next version: one wins, the other gets Conflict and takes its
    marker back, so the relay has nothing to wait out (a quiet check no longer waits 300 s)."""
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    store = VersionedStore(runtime.db["heads"], runtime.db["changes"])
    winner, loser = [_event(runtime, "won")], [_event(runtime, "lost")]
    await store.commit("agg", 1, {"n": 1}, winner)
    with pytest.raises(Conflict):
        await store.commit("agg", 1, {"n": 2}, loser)
    markers = await outbox.pending_markers(runtime.db["changes"]).find({}).to_list()
    assert [m["events"] for m in markers] == [[str(winner[0].event_id)]]


async def test_marked_relay_adopts_documents_a_flag_based_relay_left_unsent_once(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    settings = make_settings(ServiceSettings)
    runtime = Runtime(settings, QUEUES)
    changes = runtime.db["changes"]
    old = [_event(runtime, "sent-before"), _event(runtime, "left-unsent")]
    await changes.insert_one({"_id": "old:00000001", **outbox.new_document_fields(old), "outbox_sent": 1})
    runtime.marked_relay(changes)
    conn, tap = await _tap(amqp_url, runtime)
    got: list[str] = []
    async with conn:
        async with runtime.running():
            await _tap_until(tap, got, 1, "the unsent event published")
        again = Runtime(settings, QUEUES)  # a restart adopts nothing twice
        relay = again.marked_relay(again.db["changes"])
        async with again.running():  # adoption runs at start-up
            await relay.drain_once()  # and a round publishes what it adopted, if anything
        await _drain_tap(tap, got)
    assert got == ["left-unsent"]


async def test_a_handler_cut_off_by_a_dropped_connection_is_handled_again_at_once(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    """The broker drops the connection while a handler runs (FastStream cancels the delivery): the
    claim is released, so the redelivered message is handled right away instead of waiting out the
    claim's lease (the chaos run's 2-minute stall)."""
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    entered, release, cut = asyncio.Event(), asyncio.Event(), asyncio.Event()
    handled: list[str] = []

    @runtime.consumer.on(BookingAttended)
    async def handle(event: Envelope[Any]) -> None:
        entered.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            cut.set()
            raise
        handled.append(event.payload.booking_id)

    vhost = amqp_url.rsplit("/", 1)[1]
    async with runtime.running():
        await runtime.publisher.publish(_event(runtime, "cut"))
        await asyncio.wait_for(entered.wait(), timeout=20)

        async def connections() -> list[str]:
            async with httpx.AsyncClient(timeout=10) as c:
                r = await c.get(f"{support.RABBITMQ_API}/vhosts/{vhost}/connections")
                return [x["name"] for x in r.json()]

        async with httpx.AsyncClient(timeout=10) as c:
            for name in await eventually(connections, what="the runtime's connection listed"):
                await c.delete(f"{support.RABBITMQ_API}/connections/{quote(name, safe='')}")
        await asyncio.wait_for(cut.wait(), timeout=30)  # the delivery is cancelled with its handler
        release.set()
        # well inside the 120 s claim lease: the claim was released, not left to expire
        await eventually(lambda: asyncio.sleep(0, runtime.consumer.stats["handled"] >= 1), timeout=60,
                         what="the redelivery handled")  # fmt: skip
    assert handled == ["cut"]


async def test_delay_queues_hand_messages_back_at_least_once(
    make_settings: Callable[..., ServiceSettings],
) -> None:
    """A retried message waits in a quorum queue that dead-letters at least once: a classic queue
    dead-letters at most once, and the chaos run lost a booking.requested to a broker kill -9 there."""
    settings = make_settings(ServiceSettings)
    runtime = Runtime(settings, QUEUES)
    async with runtime.running():
        pass
    vhost = quote(settings.amqp_url.rsplit("/", 1)[1] or "/", safe="")
    async with httpx.AsyncClient(timeout=10) as c:
        for delay in set(QUEUES.retry_delays):
            r = await c.get(f"{support.RABBITMQ_API}/queues/{vhost}/{QUEUES.retry_queue(delay)}")
            r.raise_for_status()
            queue = r.json()
            assert queue["type"] == "quorum", queue
            assert queue["arguments"]["x-dead-letter-strategy"] == "at-least-once"
            assert queue["arguments"]["x-dead-letter-routing-key"] == QUEUES.inbox


async def test_r12_retried_and_parked_copies_rest_sealed_and_the_service_opens_them_again(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    """A copy that waits in a delay queue or in parking holds the body sealed with the service's key;
    the service opens it on every redelivery and after `consultctl dlq replay`."""
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    marker = f"person-{support.unique()}"
    attempts: list[str] = []
    healthy = asyncio.Event()

    @runtime.consumer.on(BookingAttended)
    async def handle(event: Envelope[Any]) -> None:
        attempts.append(event.payload.booking_id)
        if not healthy.is_set():
            raise TransientError("peer down")

    async with runtime.running():
        event = _event(runtime, marker)
        await runtime.publisher.publish(event)
        await eventually(lambda: _parked_count(runtime, 1), timeout=15, what="parked after the retries")
        assert attempts == [marker] * 3  # the two delayed copies were opened and handled again
        [parked] = await _parked(amqp_url)
        assert marker.encode() not in parked.body and str(event.event_id).encode() not in parked.body
        headers = parked.headers or {}
        assert headers[topology.SEALED_HEADER] and headers[topology.REASON_HEADER] == "retries-exhausted"
        assert json.loads(runtime.consumer.open_copy(parked.body, headers))["payload"]["booking_id"] == marker
        # put it back where it was (`_parked` took it), then replay it as ops do: the service opens it
        await runtime.publisher.publish_raw(
            parked.body, exchange=topology.DEAD, routing_key=QUEUES.parking, headers=dict(headers)
        )
        healthy.set()
        moved = await _replay(OpsSettings(amqp_url=amqp_url), QUEUES, 0)
        assert moved == 1
        await eventually(lambda: _handled(runtime), timeout=15, what="the replayed copy handled")
    assert attempts == [marker] * 4


async def test_r12_a_copy_sealed_by_another_key_is_parked_as_it_is_not_dropped(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    other = SecretSealer.from_secret("another service's secret", "service:probe")
    forged = other.seal(base64.b64encode(_event(runtime).to_json()).decode(), "resting-copy:probe")
    async with runtime.running():
        await runtime.publisher.publish_raw(
            forged.encode(),
            exchange=topology.REDELIVER,
            routing_key=QUEUES.inbox,
            headers={topology.SEALED_HEADER: "1"},
        )
        await eventually(lambda: _parked_count(runtime, 1), what="the unopenable copy parked")
    [parked] = await _parked(amqp_url)
    assert (parked.headers or {})[topology.REASON_HEADER] == "sealed-copy"
    assert parked.body == forged.encode()


async def test_r12_outbox_events_rest_sealed_and_the_relay_publishes_them_opened(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    """Sealed at the writer, opened by the relay just before publishing; the relay stays insert-only."""
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    changes = runtime.db["changes"]
    relay = runtime.marked_relay(changes)
    marker = f"person-{support.unique()}"
    conn, tap = await _tap(amqp_url, runtime)
    async with conn, runtime.running():
        events = [_event(runtime, f"{marker}-1"), _event(runtime, f"{marker}-2")]
        await outbox.announce(changes, "agg:00000001", events)
        doc = {"_id": "agg:00000001", **outbox.new_document_fields(events, sealer=runtime.sealer)}
        await changes.insert_one(doc)
        relay.poke(doc["_id"])
        got: list[str] = []
        await _tap_until(tap, got, 2, "both sealed events published")
        stored = await changes.find_one({"_id": "agg:00000001"})
        assert stored == doc  # never rewritten by the relay
    assert got == [f"{marker}-1", f"{marker}-2"]
    assert marker not in json.dumps(stored, default=str)
    assert [e["event_id"] for e in stored["outbox"]] == [str(e.event_id) for e in events]  # ids stay readable
    # a sealed entry moved to another event's place does not open
    swapped = {**stored["outbox"][0], "event_id": stored["outbox"][1]["event_id"]}
    with pytest.raises(SealError):
        outbox.open_event(swapped, runtime.sealer)
    with pytest.raises(outbox.SealedEventError):
        outbox.open_event(stored["outbox"][0], None)


async def test_a_parser_failure_of_any_kind_is_parked_at_once_not_retried_or_requeued(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    """A parser is pure: the same body fails the same way every time. A RecursionError escaping it
    used to be a consumer crash per delivery (nack, requeue) until the broker's delivery_limit."""

    def parser(body: bytes, msg: Any) -> Envelope[Any]:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    runtime = Runtime(make_settings(ServiceSettings), QUEUES, parser=parser)
    async with runtime.running():
        await _publish(amqp_url, b"[[[[", "booking.attended")
        await eventually(lambda: _settled(runtime, 1), what="parked")
    [parked] = await _parked(amqp_url)
    assert parked.headers[topology.REASON_HEADER] == "unparseable"
    assert "RecursionError" in str(parked.headers[topology.DETAIL_HEADER])
    assert topology.ATTEMPT_HEADER not in parked.headers
    assert runtime.consumer.stats["retried"] == 0


async def test_a_different_message_with_a_handled_id_is_parked_as_a_conflict_a_copy_is_a_duplicate(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    runtime, seen = _recording(make_settings(ServiceSettings))

    async with runtime.running():
        first = _event(runtime, "b-first")
        await runtime.publisher.publish(first)
        await eventually(lambda: _settled(runtime, 1), what="handled")
        await runtime.publisher.publish(first)  # a copy
        other = first.model_copy(
            update={"payload": first.payload.model_copy(update={"booking_id": "b-other"})}
        )
        await runtime.publisher.publish(other)  # the same id, another message
        await eventually(lambda: _settled(runtime, 3), what="copy and conflict settled")
    assert seen == ["b-first"]
    assert runtime.consumer.stats["duplicates"] == 1
    [parked] = await _parked(amqp_url)
    assert parked.headers[topology.REASON_HEADER] == "message-id-reused"
    assert (
        json.loads(runtime.consumer.open_copy(parked.body, parked.headers))["payload"]["booking_id"]
        == "b-other"
    )


class _Throttled(TransientError):
    retry_after = 2.5  # as a peer's Retry-After header would ask


async def test_a_peers_retry_after_skips_the_shorter_delays(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    """R16 (Graph throttling): a retry waits at least as long as the peer asked, so the 1 s and 2 s
    steps are skipped for 3 s; past the last step the message is parked as for any other error."""
    queues = topology.ServiceQueues("probe-wait", events=("booking.attended",), retry_delays=(1, 2, 3))
    runtime = Runtime(make_settings(ServiceSettings), queues)
    attempts: list[int] = []

    @runtime.consumer.on(BookingAttended)
    async def handle(event: Envelope[Any]) -> None:
        attempts.append(1)
        raise _Throttled("429 TooManyRequests")

    async with runtime.running():
        await runtime.publisher.publish(_event(runtime))
        await eventually(lambda: _settled(runtime, 1), timeout=30, what="the throttled event parked")
    assert len(attempts) == 2  # the first try and one retry after 3 s (not four tries)
    assert runtime.consumer.stats["retried"] == 1


async def test_a_published_event_carries_the_properties_consumers_rely_on_and_is_counted(
    make_settings: Callable[..., ServiceSettings], amqp_url: str
) -> None:
    """EventPublisher sends through aio-pika on the broker's channel, not FastStream's publish: the
    message is persistent with the event's id, correlation id, type and time, and the service's app id;
    a raw copy (a delay or parking copy) keeps its headers; both are counted per exchange."""
    runtime = Runtime(make_settings(ServiceSettings), QUEUES)
    conn, tap = await _tap(amqp_url, runtime)
    async with conn, runtime.running():
        event = _event(runtime, "props")
        await runtime.publisher.publish(event)
        await runtime.publisher.publish_raw(
            event.to_json(),
            exchange=topology.EVENTS,
            routing_key="booking.attended",
            headers={"x-probe": "1"},
            message_id="raw-1",
        )
        got: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def both() -> bool:
            while (m := await tap.get(fail=False)) is not None:
                got.append(m)
                await m.ack()
            return len(got) >= 2

        await eventually(both, what="the event and the raw copy on the tap")
    first, raw = got
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (first.message_id, first.correlation_id) == (str(event.event_id), str(event.correlation_id))
    assert first.type == "booking.attended" and first.content_type == "application/json"
    assert first.app_id == QUEUES.service and first.timestamp is not None
    assert first.timestamp.replace(microsecond=0) == event.occurred_at.replace(microsecond=0)
    assert json.loads(first.body)["event_id"] == str(event.event_id)
    assert raw.message_id == "raw-1" and raw.headers["x-probe"] == "1" and raw.correlation_id
    assert raw.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert runtime.publisher.published[topology.EVENTS] == 2  # (the consumer parked both: no handler)
