"""Thin subscribers of the audit service: every event becomes a record."""

from __future__ import annotations

from typing import Any

from services.audit.store import AuditStore
from shared.events import Envelope
from shared.runtime import Runtime


def register(runtime: Runtime, store: AuditStore) -> None:
    @runtime.consumer.on("*")
    async def record(event: Envelope[Any]) -> None:
        await store.record(event)
