"""Typed subscriptions: handlers are registered by payload class, take the routing key from it and get
the envelope of that class; what cannot be read or has no handler is still parked with its reason; and
every routing key is written once, on its class."""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest

from services.audit import handlers as audit_handlers
from services.booking import handlers as booking_handlers
from services.notifier import handlers as notifier_handlers
from services.scheduler import handlers as scheduler_handlers
from shared import topology
from shared.clock import FixedClock
from shared.commands import INTAKE_TYPES, JobseekerRecord, RequestBooking
from shared.events import (
    REGISTRY,
    BookingAttended,
    BookingCompleted,
    Envelope,
    NoticeTimerFired,
    SlotAssigned,
    new_event,
)
from shared.events import (
    PayloadT as P,
)
from shared.messaging import ANY, Consumer, EventPublisher

ROOT = Path(__file__).resolve().parents[2]
CLOCK = FixedClock(datetime(2026, 11, 25, 1, 0, tzinfo=UTC))
QUEUES = topology.ServiceQueues("probe", events=topology.keys(BookingAttended))
#: modules that build sample or imported messages with their `type` written out (test data shipped in
#: the service packages, and the registry's CSV import): they send messages, they subscribe to none
MESSAGE_BUILDERS = ("examples/forms.py", "examples/notices.py", "services/booking/ops.py")


class Published(EventPublisher):
    """Keeps what the consumer would copy to the delay and parking queues."""

    def __init__(self) -> None:
        super().__init__(MagicMock())
        self.copies: list[dict[str, Any]] = []

    async def publish_raw(self, body: bytes, **kwargs: Any) -> None:
        self.copies.append({"body": body, **kwargs})


class Delivery:
    """The parts of a RabbitMessage the consumer reads."""

    def __init__(self, body: bytes, routing_key: str) -> None:
        self.body = body
        self.headers: dict[str, Any] = {}
        self.message_id = "m-1"
        self.correlation_id = "c-1"
        self.raw_message = SimpleNamespace(routing_key=routing_key, user_id=None, exchange=topology.EVENTS)
        self.settled: str | None = None

    async def ack(self) -> None:
        self.settled = "ack"

    async def nack(self, requeue: bool = True) -> None:
        self.settled = "nack"


def consumer() -> tuple[Consumer, Published]:
    published = Published()
    return Consumer(QUEUES, published, inbox=None), published


def event(payload: P) -> Envelope[P]:
    return new_event(payload, office_id="o", producer="t", clock=CLOCK)


def attended() -> Envelope[BookingAttended]:
    return event(BookingAttended(booking_id="b1", how="joined", at=CLOCK.now()))


async def test_a_handler_registered_by_payload_class_receives_the_envelope_of_that_class() -> None:
    c, published = consumer()
    seen: list[Envelope[BookingAttended]] = []

    @c.on(BookingAttended)
    async def handle(event: Envelope[BookingAttended]) -> None:
        seen.append(event)

    sent = attended()
    delivery = Delivery(sent.to_json(), sent.type)
    await c(delivery)  # type: ignore[arg-type]
    [got] = seen
    assert type(got) is Envelope[BookingAttended] and type(got.payload) is BookingAttended
    assert got == sent and got.payload.how == "joined"
    assert delivery.settled == "ack" and published.copies == [] and c.stats["handled"] == 1


def test_the_routing_key_comes_from_the_payload_class() -> None:
    c, _ = consumer()

    async def handle(event: Envelope[Any]) -> None:
        return None

    c.on(BookingAttended, SlotAssigned)(handle)
    assert c.handlers == {"booking.attended": handle, "appointment.confirmed": handle}
    assert BookingAttended.routing_keys() == (BookingAttended.TYPE,) == ("booking.attended",)
    assert NoticeTimerFired.routing_keys() == ("appointment.notice_due",)  # the wire name is unchanged
    # an intake message travels under the keys its `type` admits: one class, two keys
    c.verify(JobseekerRecord)(MagicMock())
    c.on_conflict(RequestBooking)(handle)
    assert set(c.verifiers) == {"jobseeker.registered", "jobseeker.updated"}
    assert set(c.conflict_handlers) == {"booking.request"}
    c.on_any()(handle)
    assert c.handlers[ANY] is handle
    with pytest.raises(ValueError):
        c.on()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe{not json", "invalid-event"),
        (b'{"no": "type"}', "invalid-event"),
        (b'{"type": "booking.exploded"}', "unknown-event-type"),
        (
            event(BookingCompleted(booking_id="b", started_at=CLOCK.now(), ended_at=CLOCK.now())).to_json(),
            "no-handler",
        ),
    ],
    ids=["unreadable", "no-envelope", "unknown-type", "no-handler"],
)
async def test_what_cannot_be_read_or_handled_is_parked_with_its_reason(body: bytes, reason: str) -> None:
    c, published = consumer()
    handled: list[Envelope[Any]] = []
    c.on(BookingAttended)(handled.append)  # type: ignore[arg-type]
    delivery = Delivery(body, "booking.whatever")
    await c(delivery)  # type: ignore[arg-type]
    [copy] = published.copies
    assert copy["exchange"] == topology.DEAD and copy["routing_key"] == QUEUES.parking
    assert copy["headers"][topology.REASON_HEADER] == reason and copy["body"] == body
    assert delivery.settled == "ack" and handled == [] and c.stats["parked"] == 1


def _registered(service: str) -> Consumer:
    """The consumer of a service with its handlers registered (their collaborators are stand-ins)."""
    c = Consumer(topology.SERVICES[service], Published(), inbox=None)
    registrations: dict[str, tuple[Callable[..., None], int]] = {
        "booking": (booking_handlers.register, 3),
        "scheduler": (scheduler_handlers.register, 3),
        "notifier": (notifier_handlers.register, 1),
        "audit": (audit_handlers.register, 1),
        "console": (lambda consumer: None, 0),  # binds nothing: it only publishes access records
    }
    register, collaborators = registrations[service]
    register(c, *(MagicMock() for _ in range(collaborators)))
    return c


@pytest.mark.parametrize("service", list(topology.SERVICES))
def test_every_service_handles_exactly_the_keys_its_inbox_is_bound_to(service: str) -> None:
    q = topology.SERVICES[service]
    bound = set(q.events) | set(q.intake)
    handled = set(_registered(service).handlers)
    assert handled == ({ANY} if bound == {"#"} else bound)


def _string_constants(path: Path) -> list[str]:
    return [
        node.value
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_routing_keys_are_written_once_on_their_classes() -> None:
    keys = set(REGISTRY) | set(INTAKE_TYPES)
    found: Counter[str] = Counter()
    where: dict[str, set[str]] = {}
    for package in ("shared", "services"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in MESSAGE_BUILDERS:
                continue
            for value in _string_constants(path):
                if value in keys:
                    found[value] += 1
                    where.setdefault(value, set()).add(rel)
    assert {k: where[k] for k, n in found.items() if n != 1} == {}
    assert set(found) == keys  # each on its class: the @event of shared/events.py, an intake `type`
    assert {rel for places in where.values() for rel in places} == {"shared/events.py", "shared/commands.py"}
