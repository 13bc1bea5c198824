"""Staff HTTP API: counsellors and their availability, requests waiting for coordination (R05), timers.

Every route needs the staff key (`X-Staff-Key`, from settings); `X-Staff-Id` names the staff member in
the access log (R10). One key for all offices for now; per-office staff accounts are a later step.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field

from services.scheduler.availability import Counsellor, DatedException, check_against_policy
from services.scheduler.coordinator import Conflict, Coordinator
from services.scheduler.keeper import Context
from services.scheduler.slots import SlotGrid, on_day
from services.scheduler.staff import StaffDesk
from services.scheduler.store.requests import PENDING
from services.scheduler.wheel import TimerWheel
from shared.clock import JST
from shared.mongo import Doc
from shared.policy import MeetingApp, OfficePolicy


class CounsellorIn(BaseModel):
    name: str = Field(min_length=1)
    areas: list[str] = Field(default_factory=list, description="R20: areas served (KG)")
    apps: list[MeetingApp] = Field(default_factory=list, description="R16: apps hosted; [] = any")
    weekly: dict[str, list[str]] = Field(default_factory=dict, description="mon..sun -> ['09:00-12:00']")
    exceptions: list[DatedException] = Field(default_factory=list)
    active: bool = True


class ConfirmIn(BaseModel):
    counsellor_id: str
    start: AwareDatetime
    duration_minutes: int | None = Field(None, ge=1, le=30, description="R01; default: as requested")


class OptionIn(BaseModel):
    counsellor_id: str
    start: AwareDatetime


class ProposeIn(BaseModel):
    options: list[OptionIn] = Field(min_length=1, max_length=3)
    duration_minutes: int | None = Field(None, ge=1, le=30)


class FreeSlot(BaseModel):
    counsellor_id: str
    start: datetime
    end: datetime


def view(doc: Doc) -> dict[str, Any]:
    """A document as the API shows it: no outbox internals."""
    return {k: v for k, v in doc.items() if not k.startswith("outbox")}


def staff_auth(staff_key: str) -> Any:
    """Dependency: the staff key, and who acts, for the access log (R10)."""

    async def staff(
        request: Request,
        x_staff_key: Annotated[str, Header()] = "",
        x_staff_id: Annotated[str, Header()] = "staff",
    ) -> str:
        if not x_staff_key or not secrets.compare_digest(x_staff_key.encode(), staff_key.encode()):
            raise HTTPException(401, "staff key required (X-Staff-Key)")
        actor = f"staff:{x_staff_id[:64]}"
        request.state.actor = actor
        request.state.office_id = request.path_params.get("office_id")
        return actor

    return staff


def router(coordinator: Coordinator, desk: StaffDesk, wheel: TimerWheel, staff_key: str) -> APIRouter:
    staff = staff_auth(staff_key)  # one callable, so FastAPI runs it once per request
    api = APIRouter(prefix="/v1/staff", tags=["staff"], dependencies=[Depends(staff)])
    _counsellor_routes(api, coordinator.ctx)
    _request_routes(api, coordinator.ctx, desk, staff)
    _timer_routes(api, wheel, coordinator.ctx)
    return api


def _policy_of(ctx: Context, office_id: str) -> OfficePolicy:
    policy = ctx.policies.get(office_id)
    if policy is None:
        raise HTTPException(404, f"no office {office_id}")
    return policy


def _counsellor_routes(api: APIRouter, ctx: Context) -> None:
    @api.get("/offices/{office_id}/counsellors", response_model=list[Counsellor])
    async def list_counsellors(office_id: str, include_inactive: bool = False) -> list[Counsellor]:
        _policy_of(ctx, office_id)
        return await ctx.counsellors.of_office(office_id, active_only=not include_inactive)

    @api.put("/offices/{office_id}/counsellors/{counsellor_id}", response_model=Counsellor)
    async def put_counsellor(
        office_id: str, counsellor_id: str, body: CounsellorIn, response: Response
    ) -> Counsellor:
        """Create or replace a counsellor with weekly availability and dated exceptions."""
        policy = _policy_of(ctx, office_id)
        existing = await ctx.counsellors.get(counsellor_id)
        if existing is not None and existing.office_id != office_id:
            raise HTTPException(409, f"{counsellor_id} belongs to {existing.office_id}")
        try:
            c = Counsellor(counsellor_id=counsellor_id, office_id=office_id, **body.model_dump())
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        if problems := check_against_policy(c, policy):
            raise HTTPException(422, "; ".join(problems))
        response.status_code = 201 if await ctx.counsellors.put(c, ctx.clock.now()) else 200
        return c

    @api.delete("/offices/{office_id}/counsellors/{counsellor_id}", status_code=204)
    async def retire_counsellor(office_id: str, counsellor_id: str) -> None:
        """Retire (deactivate): kept for the records; appointments already made stay."""
        c = await ctx.counsellors.get(counsellor_id)
        if c is None or c.office_id != office_id:
            raise HTTPException(404, "no such counsellor")
        await ctx.counsellors.put(c.model_copy(update={"active": False}), ctx.clock.now())

    @api.get("/offices/{office_id}/free-slots", response_model=list[FreeSlot])
    async def free_slots(
        office_id: str,
        day: date,
        area: str | None = None,
        duration_minutes: int = Query(30, ge=1, le=30),
    ) -> list[FreeSlot]:
        """What staff can offer on one day (earliest first)."""
        policy = _policy_of(ctx, office_id)
        counsellors = [c for c in await ctx.counsellors.of_office(office_id) if c.serves(policy, area)]
        start = datetime.combine(day, datetime.min.time(), tzinfo=JST)
        now = ctx.clock.now()
        taken = await ctx.reservations.taken(office_id, start, start + timedelta(days=1), now)
        slots = on_day(
            SlotGrid(policy), counsellors, day=day, minutes=duration_minutes, now=now, taken=taken, near=start
        )
        return [FreeSlot(counsellor_id=s.counsellor_id, start=s.start, end=s.end) for s in slots[:500]]


def _request_routes(api: APIRouter, ctx: Context, desk: StaffDesk, staff: Any) -> None:
    @api.get("/offices/{office_id}/requests")
    async def list_requests(
        office_id: str, status: Annotated[list[str] | None, Query()] = None
    ) -> list[dict[str, Any]]:
        """Requests waiting for the office by default (R05: coordinate again)."""
        _policy_of(ctx, office_id)
        return [view(d) for d in await ctx.requests.of_office(office_id, status or PENDING)]

    @api.get("/requests/{booking_id}")
    async def get_request(booking_id: str) -> dict[str, Any]:
        doc = await ctx.requests.get(booking_id)
        if doc is None:
            raise HTTPException(404, "no such request")
        return view(doc)

    @api.post("/requests/{booking_id}/confirm")
    async def confirm(booking_id: str, body: ConfirmIn, actor: str = Depends(staff)) -> dict[str, Any]:
        """Fix a counsellor and a time by hand; emits appointment.confirmed (next version)."""
        try:
            doc = await desk.confirm(booking_id, body.counsellor_id, body.start, body.duration_minutes, actor)
        except LookupError as exc:
            raise HTTPException(404, "no such request") from exc
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from exc
        return view(doc)

    @api.post("/requests/{booking_id}/propose")
    async def propose(booking_id: str, body: ProposeIn, actor: str = Depends(staff)) -> dict[str, Any]:
        """Offer other times, held for the office's hold period (R05)."""
        options = [(o.counsellor_id, o.start) for o in body.options]
        try:
            doc = await desk.propose(booking_id, options, body.duration_minutes, actor)
        except LookupError as exc:
            raise HTTPException(404, "no such request") from exc
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from exc
        return view(doc)


def _timer_routes(api: APIRouter, wheel: TimerWheel, ctx: Context) -> None:
    @api.get("/timers")
    async def list_timers(
        status: str | None = "pending", booking_id: str | None = None, office_id: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            view(d) for d in await ctx.timers.find(status=status, booking_id=booking_id, office_id=office_id)
        ]

    @api.get("/timers/lease")
    async def lease() -> dict[str, Any]:
        """Which replica runs the timers, and this replica's view."""
        return {
            "lease": await wheel.lease.current(),
            "replica_id": wheel.replica_id,
            "leader": wheel.leader,
            "armed": len(wheel.armed),
            "stats": wheel.stats,
        }
