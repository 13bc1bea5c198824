"""Auditor HTTP API: search, streamed export, statistics, chain verification. Auditor keys only."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import AwareDatetime

from services.audit import auth, records
from services.audit.export import csv_chunks, json_chunks
from services.audit.search import BadCursor, Filters, encode_cursor, public
from services.audit.service import AuditService
from services.audit.stats import Tally
from services.audit.verify import check_chains
from shared.events import BookingCompleted

Opt = Annotated[str | None, Query()]


def filters(
    *,
    since: Annotated[AwareDatetime | None, Query(alias="from", description="occurred at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(alias="to", description="occurred before")] = None,
    office_id: Opt = None,
    booking_id: Opt = None,
    type: Opt = None,
    kind: Annotated[str | None, Query(description="event, access, device, usage or audit")] = None,
    actor: Opt = None,
    device_key: Annotated[str | None, Query(description="device pseudonym (R11)")] = None,
    ip_key: Annotated[str | None, Query(description="IP address pseudonym (R11)")] = None,
    email_key: Annotated[str | None, Query(description="email pseudonym (R12)")] = None,
) -> Filters:
    return Filters(since, until, office_id, booking_id, type, kind, actor, device_key, ip_key, email_key)


def _range(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def router(service: AuditService) -> APIRouter:
    api = APIRouter(prefix="/v1/audit", tags=["audit"])
    store = service.store
    reader = Depends(auth.requires(store, *auth.READERS))
    page_max = service.settings.audit_page_max

    @api.get("/records", summary="Search records, oldest first; the next page's cursor is in X-Next-Cursor")
    async def search(
        *,
        request: Request,
        response: Response,
        f: Annotated[Filters, Depends(filters)],
        caller: Annotated[auth.Caller, reader],
        limit: Annotated[int, Query(ge=1, le=page_max)] = 100,
        cursor: str | None = None,
    ) -> list[dict[str, Any]]:
        try:
            docs = await store.search(f, limit + 1, cursor)
        except BadCursor as exc:
            raise HTTPException(400, str(exc)) from exc
        if len(docs) > limit:
            docs = docs[:limit]
            nxt = encode_cursor(docs[-1])
            response.headers["X-Next-Cursor"] = nxt
            response.headers["Link"] = f'<{request.url.include_query_params(cursor=nxt)}>; rel="next"'
        return [public(d) for d in docs]

    @api.get(
        "/export",
        summary="Every matching record, streamed as CSV or a JSON array",
        description=(
            "Chain order, the same on every database: streams by name, each in seq order (rows carry "
            "stream, seq and occurred_at). Streamed; a CSV export that fails midway ends with an "
            "`# EXPORT INCOMPLETE` line, a JSON one is left unclosed."
        ),
    )
    async def export(
        f: Annotated[Filters, Depends(filters)],
        caller: Annotated[auth.Caller, reader],
        format: Literal["csv", "json"] = "csv",
    ) -> StreamingResponse:
        details = {
            "format": format,
            **{k: _range(v) if isinstance(v, datetime) else v for k, v in vars(f).items()},
        }
        await service.record(
            records.internal(
                "audit.exported",
                actor=caller.who,
                details={**details, "credential": caller.key_id},
                now=service.now(),
            )
        )
        rows = store.export(f)
        body, media = (
            (csv_chunks(rows), "text/csv; charset=utf-8")
            if format == "csv"
            else (json_chunks(rows), "application/json")
        )
        headers = {"Content-Disposition": f'attachment; filename="audit-export.{format}"'}
        return StreamingResponse(body, media_type=media, headers=headers)

    @api.get(
        "/stats", summary="Counts and minutes per office, JST day and hour; small cells suppressed (R11)"
    )
    async def stats(
        caller: Annotated[auth.Caller, reader],
        type: str = BookingCompleted.TYPE,
        office_id: str | None = None,
        since: Annotated[AwareDatetime | None, Query(alias="from")] = None,
        until: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    ) -> dict[str, Any]:
        tally = Tally()
        async for row in store.stat_rows(Filters(since, until, office_id, type=type)):
            tally.add(row)
        threshold = service.settings.audit_stats_min_cell
        return {"type": type, "threshold": threshold, "cells": tally.publish(threshold)}

    @api.get(
        "/verify", summary="Re-walk the hash chains; names the first record edited, deleted or reordered"
    )
    async def verify(caller: Annotated[auth.Caller, reader], stream: str | None = None) -> dict[str, Any]:
        return (await check_chains(store, service.keys.chain, stream)).to_dict()

    return api
