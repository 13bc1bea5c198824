"""Run one service's HTTP app under uvicorn: what every `services/<svc>/__main__.py` does."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from shared.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)

#: Seconds uvicorn waits for open requests at shutdown before the lifespan (relays, broker) closes.
GRACEFUL_SHUTDOWN_SECONDS = 20
#: R10: the peer stays the socket's. Uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1
#: (its FORWARDED_ALLOW_IPS default); the access log believes the office's TRUSTED_PROXIES only.
PROXY_HEADERS = False


def run(create_app: Callable[[S], FastAPI], settings_type: type[S]) -> None:
    """Read the service's settings from the environment and serve its app until stopped."""
    settings = settings_type()
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        proxy_headers=PROXY_HEADERS,
    )
