"""The auditors' pages: record search (office, period, type, actor; cursor paging), chain verification
per office naming the first broken record, statistics with small cells suppressed (R11), the export
download, and legal disclosures (R11): request, approve or reject by a different person, each step an
audit record of the audit service naming the person (routes/disclosures.py)."""

from datetime import datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from services.console.clients import ServiceError
from services.console.web import Console, Person, answer_status, needs, refused
from shared.clock import JST

READERS = ("auditor", "disclosure-approver")
FILTERS = ("office_id", "type", "kind", "actor", "booking_id")


def search_params(q: dict[str, str]) -> dict[str, str]:
    """The audit API's query from the search form: dates are JST days, `to` inclusive."""
    params = {k: q[k] for k in FILTERS if q.get(k)}
    try:
        if q.get("from"):
            params["from"] = datetime.combine(
                datetime.fromisoformat(q["from"]).date(), time(), JST
            ).isoformat()
        if q.get("to"):
            end = datetime.fromisoformat(q["to"]).date() + timedelta(days=1)
            params["to"] = datetime.combine(end, time(), JST).isoformat()
    except ValueError as exc:
        raise HTTPException(422, "date") from exc
    return params


def readers_only(person: Person, request: Request) -> None:
    """Auditors and disclosure approvers; the office searched for goes to the access record."""
    needs(person, *READERS)
    request.state.office_id = request.query_params.get("office_id") or "-"


def router(console: Console) -> APIRouter:
    api = APIRouter(prefix="/audit")
    Signed = Annotated[Person, Depends(console.person)]
    audit = console.clients.audit

    reader = readers_only

    @api.get("/records")
    async def records(request: Request, person: Signed, cursor: str | None = None) -> Response:
        reader(person, request)
        q = dict(request.query_params)
        context: dict[str, Any] = {"q": q, "records": [], "next": None, "searched": bool(q)}

        async def fill(ctx: dict[str, Any]) -> None:
            if q:
                params = {**search_params(q), "limit": 50, **({"cursor": cursor} if cursor else {})}
                ctx["records"], ctx["next"] = await audit.records(params, person.acting)
            ctx["next_query"] = {**{k: v for k, v in q.items() if k != "cursor"}, "cursor": ctx["next"]}

        return await console.show(request, "audit_records.html", context, person, fill)

    @api.get("/export")
    async def export(request: Request, person: Signed) -> Response:
        reader(person, request)
        q = dict(request.query_params)
        fmt = "json" if q.get("format") == "json" else "csv"
        params = {**search_params(q), "format": fmt}
        try:
            r = await audit.export(params, person.acting)
        except ServiceError as err:
            context: dict[str, Any] = {
                "q": q,
                "records": [],
                "next": None,
                "searched": True,
                "refusal": refused(err),
            }
            status = answer_status(err)
            return console.render(request, "audit_records.html", context, person=person, status=status)
        headers = {"Content-Disposition": f'attachment; filename="audit-export.{fmt}"'}
        media = r.headers.get("content-type")
        return StreamingResponse(
            r.aiter_raw(), media_type=media, headers=headers, background=BackgroundTask(r.aclose)
        )

    @api.get("/verify")
    async def verify(request: Request, person: Signed, office_id: str | None = None) -> Response:
        reader(person, request)
        context: dict[str, Any] = {"office_id": office_id or "", "result": None}

        async def fill(ctx: dict[str, Any]) -> None:
            if office_id is not None:
                ctx["result"] = await audit.verify(office_id or None, person.acting)

        return await console.show(request, "audit_verify.html", context, person, fill)

    @api.get("/stats")
    async def stats(request: Request, person: Signed) -> Response:
        reader(person, request)
        q = dict(request.query_params)
        context: dict[str, Any] = {"q": q, "result": None}

        async def fill(ctx: dict[str, Any]) -> None:
            if q:
                wanted = ("office_id", "type", "from", "to")
                params = {k: v for k, v in search_params(q).items() if k in wanted}
                ctx["result"] = await audit.stats(params, person.acting)

        return await console.show(request, "audit_stats.html", context, person, fill)

    return api
