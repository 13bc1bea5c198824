"""Legal-disclosure routes (R11): request, four-eyes decision, and the recorded opening of sealed values.

A refusal (`disclosure.Refused`) is answered by `refused` (installed by app.py): its status, the
reason in `detail` and, where a rule refuses, its id in `rule` (four eyes: 409, R11)."""

import dataclasses
from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from services.audit import auth, records
from services.audit.disclosure import DisclosureIn, Refused, Scope, check_open, decide, new_request, summary
from services.audit.search import public
from services.audit.service import AuditService
from shared.authfirst import AuthFirstRoute
from shared.mongo import Doc
from shared.text import CleanText


def shown(doc: Doc) -> dict[str, Any]:
    return {"disclosure_id": doc["_id"], **public(doc)}


async def refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    body = {"detail": exc.reason, **({"rule": exc.rule} if exc.rule else {})}
    return JSONResponse(body, exc.status_code)


class Decision(CleanText):
    PROSE: ClassVar[frozenset[str]] = frozenset({"reason"})

    reason: str | None = Field(None, max_length=2000)


def router(service: AuditService) -> APIRouter:
    # issue 8: a caller who may not call is refused even when its body is not JSON (shared/authfirst.py)
    api = APIRouter(prefix="/v1/audit/disclosures", tags=["legal disclosure"], route_class=AuthFirstRoute)
    store = service.store
    Reader = Annotated[auth.Caller, Depends(auth.requires(store, *auth.READERS))]
    Approver = Annotated[auth.Caller, Depends(auth.requires(store, auth.APPROVER))]

    async def load(disclosure_id: str) -> Doc:
        doc = await store.disclosure(disclosure_id)
        if doc is None:
            raise HTTPException(404, "no such disclosure request")
        return doc

    def note(type_: str, caller: auth.Caller, details: Doc) -> records.Entry:
        """An audit record of a disclosure step: the person acted, with this key (R11)."""
        details = {**details, "credential": caller.key_id}
        return records.internal(type_, actor=caller.who, details=details, now=service.now())

    @api.get("", summary="Disclosure requests, newest first (the console's list)")
    async def listed(
        caller: Reader,
        status: Annotated[Literal["requested", "approved", "rejected"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        return [shown(d) for d in await store.disclosures_list(status, limit)]

    @api.post("", status_code=201, summary="File a disclosure request on a legal basis")
    async def request(body: DisclosureIn, caller: Reader) -> dict[str, Any]:
        doc = new_request(body, caller, service.now())
        await service.record(note("audit.disclosure_requested", caller, summary(doc)))  # recorded first
        await store.insert_disclosure(doc)
        return shown(doc)

    @api.get("/{disclosure_id}", summary="A disclosure request and its state")
    async def show(disclosure_id: str, caller: Reader) -> dict[str, Any]:
        return shown(await load(disclosure_id))

    async def _decide(disclosure_id: str, caller: auth.Caller, approve: bool, reason: str | None) -> Doc:
        doc = await load(disclosure_id)
        changes = decide(doc, caller, approve=approve, now=service.now(), reason=reason)
        kind = "audit.disclosure_approved" if approve else "audit.disclosure_rejected"
        details = {**summary(doc), "decided_by_person": caller.who, "reason": reason}
        await service.record(note(kind, caller, details))
        if not await store.transition(disclosure_id, "requested", changes):
            raise HTTPException(409, "the request was decided meanwhile")
        return shown({**doc, **changes})

    @api.post("/{disclosure_id}/approve", summary="Approve (a second person, four eyes)")
    async def approve(disclosure_id: str, caller: Approver, body: Decision | None = None) -> dict[str, Any]:
        return await _decide(disclosure_id, caller, True, body.reason if body else None)

    @api.post("/{disclosure_id}/reject", summary="Reject the request")
    async def reject(disclosure_id: str, caller: Approver, body: Decision | None = None) -> dict[str, Any]:
        return await _decide(disclosure_id, caller, False, body.reason if body else None)

    @api.post("/{disclosure_id}/open", summary="Disclose the raw device values in scope; itself recorded")
    async def open_sealed(disclosure_id: str, caller: Reader) -> dict[str, Any]:
        doc = await load(disclosure_id)
        check_open(doc, caller, service.now(), service.settings.audit_disclosure_valid_days)
        limit = service.settings.audit_disclosure_max_records
        scope = dataclasses.replace(Scope.model_validate(doc["scope"]).filters(), sealed=True)
        found = await store.search(scope, limit + 1)
        if len(found) > limit:
            raise HTTPException(422, f"the scope covers more than {limit} records; narrow it")
        ids = [str(r["_id"]) for r in found]
        # R11: every disclosure is an audit record, written before anything is shown
        await service.record(note("audit.disclosure_opened", caller, {**summary(doc), "record_ids": ids}))
        raw = {d["_id"]: service.sealer.open(d, d["_id"]) async for d in store.sealed_for(ids)}
        await store.count_disclosure(disclosure_id, len(ids))
        keep = (
            "event_id",
            "type",
            "office_id",
            "occurred_at",
            "booking_id",
            "device_key",
            "ip_key",
            "ua_key",
        )
        disclosed = [
            {**{k: v for k, v in public(r).items() if k in keep}, "values": raw.get(r["_id"], {})}
            for r in found
        ]
        return {k: doc[k] for k in ("legal_basis", "authority", "reference_number")} | {
            "disclosure_id": disclosure_id,
            "records": disclosed,
        }

    return api
