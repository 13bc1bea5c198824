"""Parked messages: replaying a service's parking queue into its inbox, and reading what the
management API says about them without opening a body.

Every service parks the same way (shared/messaging.py, shared/topology.py: `<service>.parking`, the
reason and detail headers, sealed bodies), so replaying is one idiom: `consultctl dlq replay` and each
service's `POST /v1/ops/parked/replay` (`ops_router`) both call `replay`. A replayed message goes back
through `consult.redeliver` to the inbox it was parked from, each one confirmed by the broker before it
is acked out of parking: nothing is lost if the replay stops half-way (at worst one is delivered twice,
and the inbox deduplicates).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from shared import topology
from shared.authfirst import AuthFirstRoute

#: the header a replayed message carries: the parking queue it left
REPLAYED_HEADER = "x-replayed-from"
#: the reason shown for a message the broker parked (the inbox's delivery limit), which has no header
BROKER_LIMIT = "delivery-limit"
#: at most this many in one replay request (office policy: a replay is a deliberate, bounded act)
MAX_REPLAY = 1000


def replay_headers(headers: Mapping[str, Any] | None, parking: str) -> dict[str, Any]:
    """The headers a parked message is sent back with: its own, not the broker's or the parking's
    (`x-*`), except the seal and the sender the service set itself (it opens the body and trusts the
    sender it sealed); plus where it was replayed from."""
    kept = {
        k: v
        for k, v in (headers or {}).items()
        if not k.startswith("x-") or k in (topology.SEALED_HEADER, topology.SENDER_HEADER)
    }
    kept[REPLAYED_HEADER] = parking
    return kept


async def replay(
    amqp_url: str,
    q: topology.ServiceQueues,
    limit: int = 0,
    on_moved: Callable[[int, int], None] | None = None,
) -> int:
    """Move up to `limit` (0: all there are now) parked messages of `q` back to its inbox; returns how
    many moved. `on_moved(moved, total)` is told after each one (a progress bar)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        parking = await channel.get_queue(q.parking)
        redeliver = await channel.get_exchange(topology.REDELIVER)
        total = parking.declaration_result.message_count or 0
        if limit:
            total = min(total, limit)
        moved = 0
        while moved < total and (msg := await parking.get(fail=False, no_ack=False)) is not None:
            await redeliver.publish(
                aio_pika.Message(
                    msg.body,
                    headers=replay_headers(msg.headers, q.parking),
                    content_type=msg.content_type,
                    message_id=msg.message_id,
                    correlation_id=msg.correlation_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=q.inbox,
                mandatory=True,
            )
            await msg.ack()  # only after the broker confirmed the copy
            moved += 1
            if on_moved:
                on_moved(moved, total)
        return moved


def peek_body(count: int) -> dict[str, Any]:
    """The management API's `POST /api/queues/<vhost>/<queue>/get` body that shows up to `count`
    parked messages and leaves them parked (`ack_requeue_true`). Its cost: each message shown is
    delivered and requeued, so the broker marks it redelivered and counts one more delivery (a quorum
    queue's delivery count); shown only when someone asks, never on a page's refresh."""
    return {"count": count, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 2000}


@dataclass(frozen=True)
class Parked:
    """What may be shown of one parked message: where it came from and why it was parked; its body
    only if the service did not seal it (R12: a sealed body opens only in the service)."""

    routing_key: str
    reason: str
    detail: str
    sealed: bool
    body: str | None
    message_id: str | None

    @classmethod
    def of(cls, message: Mapping[str, Any]) -> Parked:
        """One message as the management API's `get` answers it."""
        props = message.get("properties") or {}
        headers = props.get("headers") or {}
        sealed = headers.get(topology.SEALED_HEADER) is not None
        return cls(
            routing_key=str(headers.get("x-routing-key") or message.get("routing_key") or ""),
            reason=str(headers.get(topology.REASON_HEADER) or BROKER_LIMIT),
            detail=str(headers.get(topology.DETAIL_HEADER) or "")[:300],
            sealed=sealed,
            body=None if sealed else str(message.get("payload", ""))[:300],
            message_id=props.get("message_id"),
        )


# --------------------------------------------------------------------------- HTTP


class ReplayAsk(BaseModel):
    limit: int = Field(
        ..., ge=1, le=MAX_REPLAY, description="at most this many (the count the operator confirmed)"
    )


class ReplayDone(BaseModel):
    parking: str
    inbox: str
    moved: int


Guard = Callable[..., Awaitable[Any]]


def ops_router(amqp_url: str, q: topology.ServiceQueues, operator: Guard) -> APIRouter:
    """`POST /v1/ops/parked/replay`: this service replays its own parked messages. `operator` is the
    service's dependency that lets only a caller with the role `operator` through (401/403 else); the
    access log (R10) names the person who asked."""
    api = APIRouter(prefix="/v1/ops", tags=["operations"], route_class=AuthFirstRoute)  # 401/403 first

    # a dependency of the route, not a parameter: annotations are strings here (the future import)
    # and `operator` a local FastAPI could not resolve
    @api.post("/parked/replay", response_model=ReplayDone, dependencies=[Depends(operator)])
    async def replay_parked(ask: ReplayAsk) -> ReplayDone:
        moved = await replay(amqp_url, q, ask.limit)
        return ReplayDone(parking=q.parking, inbox=q.inbox, moved=moved)

    return api
