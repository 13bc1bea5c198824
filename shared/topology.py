"""The whole broker topology in one place: exchanges, per-service queues, retries, parking.

portal ──> consult.intake (topic) ──┐
service ─> consult.events (topic) ──┼──> <service>.inbox (quorum, delivery limit)
                                    │        │ handler fails transiently
                                    │        └─> consult.retry ─> <service>.delay.<n>s (quorum, TTL)
                                    │                 └─(expired)─> consult.redeliver ─> <service>.inbox
                                    └── poison or delivery limit ─> consult.dead ─> <service>.parking
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel

from shared import commands
from shared import events as contracts

EVENTS = "consult.events"
INTAKE = "consult.intake"
RETRY = "consult.retry"
REDELIVER = "consult.redeliver"
DEAD = "consult.dead"

#: headers the runtime sets on retried and parked messages
ATTEMPT_HEADER = "x-attempt"
REASON_HEADER = "x-park-reason"
DETAIL_HEADER = "x-park-detail"
SOURCE_HEADER = "x-source-queue"
#: on a parked or delayed copy whose body the service sealed (R12); `dlq replay` keeps it
SEALED_HEADER = "x-consult-sealed"
#: on a retried or parked copy: who published the original, as the broker verified it (the AMQP
#: `user_id` property), sealed by the service that set it, so a copy it re-publishes keeps its sender
SENDER_HEADER = "x-consult-sender"

#: each portal has a broker user of its own, `portal.<portal id>`; it must set the AMQP `user_id`
#: property to that name, which RabbitMQ checks against the login (issue 14)
PORTAL_USER_PREFIX = "portal."


def portal_user(portal_id: str, prefix: str = PORTAL_USER_PREFIX) -> str:
    """The broker user a portal publishes its commands as."""
    return prefix + portal_id


def portal_of_user(user: str | None, prefix: str = PORTAL_USER_PREFIX) -> str | None:
    """The portal id a broker user stands for, or None if it is not a portal's user."""
    if user and user.startswith(prefix) and len(user) > len(prefix):
        return user[len(prefix) :]
    return None


def keys(*payloads: type[contracts.Payload]) -> tuple[str, ...]:
    """The routing keys of these payload classes, as each class names them (`Payload.routing_keys`)."""
    return tuple(key for payload in payloads for key in payload.routing_keys())


@dataclass(frozen=True)
class ServiceQueues:
    """One service's queues and what it listens to."""

    service: str
    #: binding keys on consult.events: the payload classes' keys (`keys(...)`), or a pattern ("#")
    events: tuple[str, ...] = ()
    #: binding keys on consult.intake, from the intake message classes
    intake: tuple[str, ...] = ()
    retry_delays: tuple[int, ...] = (1, 5, 30)
    delivery_limit: int = 5
    extra_args: dict[str, int | str] = field(default_factory=dict)

    @property
    def inbox(self) -> str:
        return f"{self.service}.inbox"

    @property
    def parking(self) -> str:
        return f"{self.service}.parking"

    def retry_queue(self, delay: int) -> str:
        # "delay", not the earlier classic "retry" queues: a queue's type cannot change in place
        return f"{self.service}.delay.{delay}s"

    def delay_for(self, attempt: int) -> int | None:
        """Seconds to wait before attempt number `attempt` (1-based retries); None: give up."""
        if attempt < 1 or attempt > len(self.retry_delays):
            return None
        return self.retry_delays[attempt - 1]


BOOKING = ServiceQueues(
    "booking",
    events=keys(
        contracts.SlotAssigned,
        contracts.AlternativesHeld,
        contracts.HoldExpired,
        contracts.LeftToStaff,
        contracts.NoticeTimerFired,
        contracts.NoShow,
        contracts.MeetingJoined,
    ),
    intake=keys(
        commands.RequestBooking, commands.ChangeWindows, commands.JobseekerRecord, commands.ObserveDevice
    ),
)
SCHEDULER = ServiceQueues(
    "scheduler",
    events=keys(
        contracts.BookingRequested,
        contracts.BookingWindowsChanged,
        contracts.BookingCancelled,
        contracts.BookingAttended,
        contracts.BookingCompleted,
        contracts.AlternativeAccepted,
        contracts.AlternativeDeclined,
    ),
    # R16: Microsoft Graph throttling asks for up to minutes (Retry-After); later steps honour it.
    retry_delays=(1, 5, 30, 60, 120, 300),
)
NOTIFIER = ServiceQueues(
    "notifier",
    events=keys(
        contracts.BookingConfirmed,
        contracts.BookingRecoordinationProposed,
        contracts.BookingAwaitingCoordination,
        contracts.BookingTermsChangeAnnounced,
        contracts.BookingNoticeDue,
        contracts.BookingCancelled,
        contracts.PersonRefused,
    ),
    # Survives an SMTP outage of ~9 minutes; early steps short, so a brief outage costs seconds.
    # These are fresh messages, not redeliveries: the inbox's delivery limit (crash loops) is unchanged.
    retry_delays=(1, 3, 10, 20, 30, 60, 120, 300),
)
AUDIT = ServiceQueues("audit", events=("#",))
#: the staff and auditor console listens to nothing: it only publishes its access records (R10)
CONSOLE = ServiceQueues("console")

SERVICES: dict[str, ServiceQueues] = {q.service: q for q in (BOOKING, SCHEDULER, NOTIFIER, AUDIT, CONSOLE)}


EXCHANGES = (
    (EVENTS, aio_pika.ExchangeType.TOPIC),
    (INTAKE, aio_pika.ExchangeType.TOPIC),
    (RETRY, aio_pika.ExchangeType.DIRECT),
    (REDELIVER, aio_pika.ExchangeType.DIRECT),
    (DEAD, aio_pika.ExchangeType.DIRECT),
)


async def declare_exchanges(channel: AbstractChannel) -> None:
    for name, kind in EXCHANGES:
        await channel.declare_exchange(name, kind, durable=True)


async def exchanges_exist(connection: aio_pika.abc.AbstractConnection) -> bool:
    """Whether every shared exchange is there (passive declares: they need no permission)."""
    for name, kind in EXCHANGES:
        channel = await connection.channel()
        try:
            await channel.declare_exchange(name, kind, durable=True, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False  # the broker closed that channel; the caller opens a new one
        finally:
            if not channel.is_closed:
                await channel.close()
    return True


async def declare_service(channel: AbstractChannel, q: ServiceQueues, *, exchanges: bool = True) -> None:
    """Declare a service's inbox, retry and parking queues and their bindings (idempotent), and the
    shared exchanges first unless they are known to exist."""
    if exchanges:
        await declare_exchanges(channel)
    parking = await channel.declare_queue(q.parking, durable=True, arguments={"x-queue-type": "quorum"})
    await parking.bind(DEAD, routing_key=q.parking)
    inbox = await channel.declare_queue(
        q.inbox,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            # crash loops: after this many deliveries the broker parks the message itself
            "x-delivery-limit": q.delivery_limit,
            "x-dead-letter-exchange": DEAD,
            "x-dead-letter-routing-key": q.parking,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            **q.extra_args,
        },
    )
    for key in q.events:
        await inbox.bind(EVENTS, routing_key=key)
    for key in q.intake:
        await inbox.bind(INTAKE, routing_key=key)
    await inbox.bind(REDELIVER, routing_key=q.inbox)
    for delay in q.retry_delays:
        name = q.retry_queue(delay)
        retry = await channel.declare_queue(
            name,
            durable=True,
            arguments={
                # quorum with at-least-once dead-lettering: a classic queue dead-letters at most once,
                # so a broker killed as a delay expired lost the message (chaos: a booking left
                # `coordinating` after RabbitMQ's kill -9)
                "x-queue-type": "quorum",
                "x-message-ttl": delay * 1000,
                "x-dead-letter-exchange": REDELIVER,
                "x-dead-letter-routing-key": q.inbox,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        await retry.bind(RETRY, routing_key=name)


async def declare_all(channel: AbstractChannel) -> None:
    for q in SERVICES.values():
        await declare_service(channel, q)
