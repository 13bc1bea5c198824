"""Staff HTTP API: counsellors and their availability, requests waiting for coordination (R05), timers;
and a counsellor's own schedule.

Every route needs a scheduler staff key (services/scheduler/auth.py), held by a person; the staff
routes the role `staff`. A key acts for its offices only (issue 8): the office in the path, the office
of the request named in the path, or the `office_id` of a timer query; another office's is a 403.
The check is a router dependency, so it comes before FastAPI validates body and query (and
`AuthFirstRoute` puts it before a body that is not JSON). The access log and `confirmed_by` name the
person (R10).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from datetime import date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import AwareDatetime, BaseModel, EmailStr, Field, ValidationError

from services.scheduler.auth import StaffCaller, staff_auth
from services.scheduler.availability import (
    Area,
    Counsellor,
    DatedException,
    Room,
    SpanText,
    check_against_policy,
)
from services.scheduler.coordinator import Coordinator
from services.scheduler.domain import WAITING, Conflict
from services.scheduler.keeper import Context
from services.scheduler.slots import SlotGrid, on_day
from services.scheduler.staff import StaffDesk
from services.scheduler.store.staff_keys import StaffKeyStore
from services.scheduler.wheel import TimerWheel
from shared.authfirst import AuthFirstRoute
from shared.clock import JST
from shared.mongo import Doc
from shared.policy import MeetingApp, OfficePolicy
from shared.text import CleanText

RULE_PREFIX = re.compile(r"^R\d\d: ")


class CounsellorIn(CleanText):
    name: str = Field(min_length=1, max_length=100)
    areas: list[Area] = Field(default_factory=list, max_length=20, description="R20: areas served (KG)")
    apps: list[MeetingApp] = Field(default_factory=list, description="R16: apps hosted; [] = any")
    weekly: dict[str, list[SpanText]] = Field(default_factory=dict, description="mon..sun -> ['09:00-12:00']")
    exceptions: list[DatedException] = Field(default_factory=list, max_length=400)
    active: bool = True
    email: EmailStr | None = Field(None, description="work email for assignments, changes and the agenda")
    organizer: str | None = Field(None, max_length=200, description="R16 Teams: the Entra user organising")


class RoomIn(CleanText):
    """R16: a standing join URL of the counsellor's in one app (TeleOffice; Teams or Skype for
    Business Server links): https on the app's own host or the office's configured one."""

    app: MeetingApp
    join_url: str = Field(max_length=500, description="https join URL the app issued")
    meeting_id: str | None = Field(None, max_length=40)
    passcode: str | None = Field(None, max_length=40)


class ConfirmIn(CleanText):
    PROSE: ClassVar[frozenset[str]] = frozenset({"late_reason"})

    counsellor_id: str = Field(max_length=64)
    start: AwareDatetime
    duration_minutes: int | None = Field(None, ge=1, le=30, description="R01; default: as requested")
    late_reason: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="R04: why staff confirm later than the office's deadline, where the office allows "
        "it (HW 第6条(1) 原則として); recorded with the appointment and audited",
    )


class OptionIn(CleanText):
    counsellor_id: str = Field(max_length=64)
    start: AwareDatetime


class ProposeIn(CleanText):
    options: list[OptionIn] = Field(min_length=1, max_length=3)
    duration_minutes: int | None = Field(None, ge=1, le=30)


class FreeSlot(BaseModel):
    counsellor_id: str
    start: datetime
    end: datetime


async def answered(change: Awaitable[Doc]) -> dict[str, Any]:
    """A staff change as HTTP: the request as it now is, 404 for an unknown one, 409 with the
    reason for one the request (or the booking behind it) cannot take."""
    try:
        doc = await change
    except LookupError as exc:
        raise HTTPException(404, "no such request") from exc
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from exc
    return view(doc)


def view(doc: Doc) -> dict[str, Any]:
    """A document as the API shows it: no outbox internals."""
    return {k: v for k, v in doc.items() if not k.startswith("outbox")}


def router(coordinator: Coordinator, desk: StaffDesk, wheel: TimerWheel, keys: StaffKeyStore) -> APIRouter:
    staff = staff_auth(keys, coordinator.ctx.requests)  # one callable, so FastAPI runs it once a request
    api = APIRouter(
        prefix="/v1/staff", tags=["staff"], dependencies=[Depends(staff)], route_class=AuthFirstRoute
    )
    _counsellor_routes(api, coordinator.ctx)
    _request_routes(api, coordinator.ctx, desk, staff)
    _timer_routes(api, wheel, coordinator.ctx, staff)
    return api


#: the statuses the coordination queue lists (services/scheduler/domain.py WAITING)
QueueStatus = Literal["coordinating", "proposed", "needs_staff", "declined", "hold_expired"]


def _policy_of(ctx: Context, office_id: str) -> OfficePolicy:
    policy = ctx.policies.get(office_id)
    if policy is None:
        raise HTTPException(404, f"no office {office_id}")
    return policy


def _valid(ctx: Context, policy: OfficePolicy, **fields: Any) -> Counsellor:
    """A counsellor record the office can use (R16 rooms and apps, R20 areas), else 422 with the
    field errors in FastAPI's form (`loc`, `msg`, `type`) and, for the office's rules, the `rule`."""
    try:
        c = Counsellor.model_validate(fields)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise HTTPException(422, [{**e, "loc": ["body", *e["loc"]]} for e in errors]) from exc
    if problems := check_against_policy(c, policy, ctx.rooms.dev_hosts):
        raise HTTPException(422, [_policy_problem(p) for p in problems])
    return c


def _policy_problem(text: str) -> dict[str, Any]:
    """One of check_against_policy's problems as a field error: R20 the areas, R16 the apps or the
    rooms."""
    rule = text[:3] if RULE_PREFIX.match(text) else None
    field = "rooms" if "room" in text else {"R20": "areas", "R16": "apps"}.get(rule or "", "body")
    return {"loc": ["body", field], "msg": text, "type": "policy", "rule": rule}


async def _counsellor_of(ctx: Context, office_id: str, counsellor_id: str) -> Counsellor:
    _policy_of(ctx, office_id)
    c = await ctx.counsellors.get(counsellor_id)
    if c is None or c.office_id != office_id:
        raise HTTPException(404, "no such counsellor")
    return c


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
        rooms = existing.rooms if existing is not None else []  # rooms have routes of their own
        c = _valid(
            ctx, policy, counsellor_id=counsellor_id, office_id=office_id, rooms=rooms, **body.model_dump()
        )
        response.status_code = 201 if await ctx.counsellors.put(c, ctx.clock.now()) else 200
        return c

    @api.get("/offices/{office_id}/counsellors/{counsellor_id}/rooms", response_model=list[Room])
    async def list_rooms(office_id: str, counsellor_id: str) -> list[Room]:
        """R16: the counsellor's pre-issued rooms."""
        return (await _counsellor_of(ctx, office_id, counsellor_id)).rooms

    @api.put("/offices/{office_id}/counsellors/{counsellor_id}/rooms/{room_id}", response_model=Room)
    async def put_room(
        office_id: str, counsellor_id: str, room_id: str, body: RoomIn, response: Response
    ) -> Room:
        """R16: register (or replace) one of the counsellor's standing join URLs. Checked: https, on
        the app's own host or one the office configured (`meeting[].hosts`), an app the office
        takes pre-issued rooms for. A consultation then gets a room no overlapping one uses."""
        policy = _policy_of(ctx, office_id)
        c = await _counsellor_of(ctx, office_id, counsellor_id)
        try:
            room = Room(room_id=room_id, **body.model_dump())
        except ValueError as exc:
            raise HTTPException(422, f"R16: {exc}") from exc
        others = [r for r in c.rooms if r.room_id != room_id]
        fresh = _valid(ctx, policy, **{**c.model_dump(), "rooms": [*others, room]})
        await ctx.counsellors.put(fresh, ctx.clock.now())
        response.status_code = 200 if len(others) < len(c.rooms) else 201
        return room

    @api.delete("/offices/{office_id}/counsellors/{counsellor_id}/rooms/{room_id}", status_code=204)
    async def delete_room(office_id: str, counsellor_id: str, room_id: str) -> None:
        """R16: a room no longer offered; consultations already given it keep their join URL."""
        c = await _counsellor_of(ctx, office_id, counsellor_id)
        if all(r.room_id != room_id for r in c.rooms):
            raise HTTPException(404, "no such room")
        rooms = [r for r in c.rooms if r.room_id != room_id]
        await ctx.counsellors.put(c.model_copy(update={"rooms": rooms}), ctx.clock.now())

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
        near: Annotated[
            AwareDatetime | None, Query(description="closest to this time of day first (R05)")
        ] = None,
    ) -> list[FreeSlot]:
        """What staff can offer on one day: earliest first, or closest to `near` (a wished time)."""
        policy = _policy_of(ctx, office_id)
        counsellors = [c for c in await ctx.counsellors.of_office(office_id) if c.serves(policy, area)]
        start = datetime.combine(day, datetime.min.time(), tzinfo=JST)
        now = ctx.clock.now()
        taken = await ctx.reservations.taken(office_id, start, start + timedelta(days=1), now)
        slots = on_day(
            SlotGrid(policy),
            counsellors,
            day=day,
            minutes=duration_minutes,
            now=now,
            taken=taken,
            near=near or start,
        )
        return [FreeSlot(counsellor_id=s.counsellor_id, start=s.start, end=s.end) for s in slots[:500]]


def _request_routes(api: APIRouter, ctx: Context, desk: StaffDesk, staff: Any) -> None:
    @api.get("/offices/{office_id}/requests")
    async def list_requests(
        office_id: str,
        status: Annotated[
            list[QueueStatus] | None,
            Query(description="of the waiting statuses (the queue); default all of them"),
        ] = None,
    ) -> list[dict[str, Any]]:
        """The coordination queue: requests waiting for the office (R05: coordinate again), oldest
        first, at most 200; another status than a waiting one is a 422 naming `status`."""
        _policy_of(ctx, office_id)
        statuses: list[str] = list(status) if status else [s.value for s in WAITING]
        return [view(d) for d in await ctx.requests.of_office(office_id, statuses)]

    @api.get("/requests/{booking_id}")
    async def get_request(booking_id: str) -> dict[str, Any]:
        doc = await ctx.requests.get(booking_id)
        if doc is None:
            raise HTTPException(404, "no such request")
        return view(doc)

    @api.post("/requests/{booking_id}/confirm")
    async def confirm(
        booking_id: str,
        body: ConfirmIn,
        caller: StaffCaller = Depends(staff),  # noqa: B008
    ) -> dict[str, Any]:
        """Fix a counsellor and a time by hand; emits appointment.confirmed (next version)."""
        return await answered(
            desk.confirm(
                booking_id,
                body.counsellor_id,
                body.start,
                body.duration_minutes,
                caller.actor,
                late_reason=body.late_reason,
            )
        )

    @api.post("/requests/{booking_id}/propose")
    async def propose(
        booking_id: str,
        body: ProposeIn,
        caller: StaffCaller = Depends(staff),  # noqa: B008
    ) -> dict[str, Any]:
        """Offer other times, held for the office's hold period (R05)."""
        options = [(o.counsellor_id, o.start) for o in body.options]
        return await answered(desk.propose(booking_id, options, body.duration_minutes, caller.actor))


def _timer_routes(api: APIRouter, wheel: TimerWheel, ctx: Context, staff: Any) -> None:
    @api.get("/timers")
    async def list_timers(
        status: str | None = "pending",
        booking_id: str | None = None,
        office_id: str | None = None,
        caller: StaffCaller = Depends(staff),  # noqa: B008 (`staff` is local: Annotated would not resolve)
    ) -> list[dict[str, Any]]:
        """Timers of the key's office (another office's: 403 in the dependency)."""
        office = caller.office_for_timers(office_id)
        return [
            view(d) for d in await ctx.timers.find(status=status, booking_id=booking_id, office_id=office)
        ]

    @api.get("/timers/lease")
    async def lease() -> dict[str, Any]:
        """Which replica runs the timers, and this replica's view."""
        return {
            "lease": await wheel.lease.current(),
            "replica_id": wheel.replica_id,
            "leader": wheel.leader,
            "armed": len(wheel.armed),
            "pending": len(wheel.index),
            "stats": wheel.stats,
        }
