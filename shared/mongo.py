"""MongoDB access: PyMongo's async client (the successor of Motor), configured once."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

Doc = dict[str, Any]


def connect(url: str, *, app_name: str, timeout_ms: int = 5000) -> AsyncMongoClient[Doc]:
    """A client that returns aware UTC datetimes and standard UUIDs."""
    return AsyncMongoClient(
        url,
        tz_aware=True,
        uuidRepresentation="standard",
        appname=app_name,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        # a server that stops answering mid-call must not hang a handler forever
        socketTimeoutMS=30_000,
    )


async def ping(client: AsyncMongoClient[Doc]) -> bool:
    try:
        await client.admin.command("ping")
    except Exception:
        return False
    return True
