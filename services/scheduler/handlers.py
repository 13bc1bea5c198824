"""Thin subscribers of the scheduler service."""

from __future__ import annotations

from typing import Any

from shared.events import Envelope
from shared.runtime import Runtime


def register(runtime: Runtime) -> None:
    @runtime.consumer.on("*")
    async def seen(event: Envelope[Any]) -> None:
        runtime.log.info("scheduler received %s for %s", event.type, event.office_id)
