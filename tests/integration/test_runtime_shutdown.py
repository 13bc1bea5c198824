"""Runtime shutdown: what was written to an outbox before the service stopped is published before the
broker connection closes, not left in MongoDB for the next start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared import topology
from shared.events import BookingAttended
from shared.runtime import Runtime
from shared.settings import ServiceSettings
from shared.store import outbox
from tests.support import event_sink, eventually, received, serve

# The runtime's own inbox binds nothing the tests publish: the sink is the only queue that sees them.
QUEUES = topology.ServiceQueues("shutprobe", events=("nothing.bound",))


async def test_outbox_written_but_not_yet_relayed_is_published_at_shutdown(
    make_settings: Callable[..., ServiceSettings], mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    # A poll far beyond the test and no poke: only the relay's final drain at shutdown can publish.
    settings = make_settings(ServiceSettings, outbox_poll_seconds=600)
    runtime = Runtime(settings, QUEUES)
    things = runtime.db["things"]
    runtime.relay(things)
    event = runtime.event(BookingAttended(booking_id="b-late", how="joined", at=runtime.clock.now()), "x")
    await runtime.declare()
    async with event_sink(settings.amqp_url, "booking.attended") as sink:
        async with runtime.running():
            await things.insert_one({"_id": "late", **outbox.new_document_fields([event])})
        doc = await mongo[runtime.db.name]["things"].find_one({"_id": "late"})
        assert doc is not None and doc["outbox_pending"] is False, "left for the next start"
        assert [e["event_id"] for e in await received(sink)] == [str(event.event_id)]


async def test_access_log_of_the_last_request_is_published_before_the_broker_closes(
    make_settings: Callable[..., ServiceSettings], mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    settings = make_settings(ServiceSettings, outbox_poll_seconds=600)
    runtime = Runtime(settings, QUEUES)
    app = runtime.http_app(title="probe")

    @app.get("/v1/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    await runtime.declare()
    async with event_sink(settings.amqp_url, "access.logged") as sink:
        async with serve(app) as client:
            assert (await client.get("/v1/ping")).status_code == 200
        # the access outbox deletes what it sent: nothing is left for the next start
        assert await mongo[runtime.db.name]["access_outbox"].count_documents({}) == 0
        routes = [e["payload"]["route"] for e in await received(sink)]
        assert routes == ["/v1/ping"]


async def test_a_relay_stopped_mid_round_finishes_it_and_the_final_drain_still_publishes(
    make_settings: Callable[..., ServiceSettings],
    mongo: AsyncMongoClient[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping used to cancel the round in progress: a publish cancelled while awaiting its confirm
    made aiormq close the channel all publishers share, and the final drain hung for 10 s and left
    the rest pending. Now the round finishes, then the drain publishes what is left. (The bound on a
    stuck round, 5 s, is lifted here: on a loaded machine a round of 400 takes longer than that.)"""
    monkeypatch.setattr(outbox, "STOP_GRACE_SECONDS", 300.0)
    settings = make_settings(ServiceSettings, outbox_poll_seconds=600)
    runtime = Runtime(settings, QUEUES)
    things = runtime.db["things"]
    relay = runtime.relay(things)
    at = runtime.clock.now()
    events = [
        runtime.event(BookingAttended(booking_id=f"b-{i}", how="joined", at=at), "x") for i in range(400)
    ]
    await runtime.declare()
    async with event_sink(settings.amqp_url, "booking.attended") as sink:
        async with runtime.running():
            docs = [{"_id": f"d{i}", **outbox.new_document_fields([e])} for i, e in enumerate(events)]
            await things.insert_many(docs)
            relay.poke()

            async def under_way() -> bool:
                return relay.published > 0

            await eventually(under_way, what="the relay's round under way", interval=0.005)
        assert await mongo[runtime.db.name]["things"].count_documents({"outbox_pending": True}) == 0
        published = {e["event_id"] for e in await received(sink)}
    assert published == {str(e.event_id) for e in events}
