"""Thin subscribers of the audit service: every event on the exchange becomes a record (R10)."""

from __future__ import annotations

from typing import Any

from faststream.rabbit.message import RabbitMessage
from pydantic import ConfigDict, ValidationError

from services.audit import records
from services.audit.service import AuditService
from shared.events import Envelope, Payload, UnknownEventType, parse_event
from shared.messaging import Consumer


class Unregistered(Payload):
    """A payload of a type this build does not know yet: recorded as it came, not parked (R10)."""

    model_config = ConfigDict(extra="allow", frozen=True)


def parse_any(body: bytes, msg: RabbitMessage) -> Envelope[Any]:
    """Known types are validated strictly; an unknown type in a valid envelope is still an event to
    record (R10); anything else is parked with its reason."""
    try:
        return parse_event(body)
    except UnknownEventType as unknown:
        try:
            return Envelope[Unregistered].model_validate_json(body)
        except ValidationError as exc:
            raise unknown from exc  # not even an envelope: parked, as unknown-event-type


def register(consumer: Consumer, service: AuditService) -> None:
    @consumer.on_any()
    async def record(event: Envelope[Any]) -> None:
        # returns (and the message is acked) only once the record is written
        await service.record(records.from_event(event, now=service.now(), pseudonymise=service.pseudonymise))
