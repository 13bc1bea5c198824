"""Auditor HTTP API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.audit.store import AuditStore


def router(store: AuditStore) -> APIRouter:
    api = APIRouter(prefix="/v1/audit", tags=["audit"])

    @api.get("/records")
    async def records(booking_id: str) -> list[dict[str, Any]]:
        return [{**d, "occurred_at": d["occurred_at"].isoformat()} for d in await store.find(booking_id)]

    return api
