"""A counsellor's schedule for one JST day: the consultations they hold and the times held for them
in proposals (R05), read by staff of their office or by the counsellor themselves (auth.py).

`GET /v1/counsellors/{counsellor_id}/schedule?day=YYYY-MM-DD`. The cells the counsellor has that day
are read by `_id` (one lookup per grid cell of the office's hours) where the grid is coarse enough,
else by the (counsellor, start) range; each booking's request is then read by `_id` for the times.
"""

import asyncio
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from services.scheduler.auth import schedule_auth
from services.scheduler.availability import Counsellor
from services.scheduler.keeper import Context
from services.scheduler.slots import SlotGrid
from services.scheduler.store.reservations import BOOKED, HELD
from services.scheduler.store.staff_keys import StaffKeyStore
from shared.authfirst import AuthFirstRoute
from shared.clock import JST
from shared.mongo import Doc

#: at most this many cells a day are read one by one (KG, HW: 16); a finer grid (the demo office's
#: 1-minute cells) is read by the counsellor's range instead
BY_ID_MAX = 96


class Reserved(BaseModel):
    booking_id: str
    kind: Literal["booked", "held"] = Field(description="booked: a consultation; held: a proposed time (R05)")
    start: datetime
    end: datetime
    status: str = Field(description="the request's coordination status")
    option_id: str | None = Field(None, description="held: the proposal's option")
    hold_until: datetime | None = Field(None, description="held: until when the time is held")
    app: str | None = Field(None, description="booked: the meeting app (R16)")
    meeting_url: str | None = None
    meeting_id: str | None = None
    passcode: str | None = None


class Schedule(BaseModel):
    counsellor_id: str
    office_id: str
    day: date = Field(description="the JST day")
    reservations: list[Reserved] = Field(description="earliest first; times in UTC")


def _entries(doc: Doc, counsellor_id: str, kinds: set[str], start: datetime, end: datetime) -> list[Reserved]:
    """What of this request the counsellor holds in [start, end): its appointment, held options."""

    def entry(kind: str, at: Doc, **more: Any) -> Reserved:
        times = {"start": at["start"], "end": at["end"]}
        return Reserved(booking_id=doc["_id"], kind=kind, status=doc["status"], **times, **more)

    found: list[Reserved] = []
    a = doc.get("appointment")
    if BOOKED in kinds and a and a["counsellor_id"] == counsellor_id and start <= a["start"] < end:
        found.append(
            entry(BOOKED, a, **{k: a.get(k) for k in ("app", "meeting_url", "meeting_id", "passcode")})
        )
    proposal = doc.get("proposal") or {}
    for o in proposal.get("options", []) if HELD in kinds else []:
        if o["counsellor_id"] == counsellor_id and start <= o["start"] < end:
            found.append(entry(HELD, o, option_id=o["option_id"], hold_until=proposal.get("hold_until")))
    return found


async def day_of(ctx: Context, counsellor_id: str, office_id: str, day: date) -> list[Reserved]:
    start = datetime.combine(day, time(), JST)
    end = start + timedelta(days=1)
    cells = SlotGrid(ctx.policies[office_id]).day_cells(day)
    held = (
        await ctx.reservations.at_cells(counsellor_id, cells)
        if len(cells) <= BY_ID_MAX
        else await ctx.reservations.of_counsellor(counsellor_id, start, end)
    )
    kinds: dict[str, set[str]] = {}
    for cell in held:
        kinds.setdefault(cell["booking_id"], set()).add(cell["kind"])
    entries: list[Reserved] = []
    docs = await asyncio.gather(*(ctx.requests.get(booking_id) for booking_id in kinds))
    for doc, of_booking in zip(docs, kinds.values(), strict=True):
        if doc is not None:
            entries += _entries(doc, counsellor_id, of_booking, start, end)
    return sorted(entries, key=lambda e: (e.start, e.booking_id))


def router(ctx: Context, keys: StaffKeyStore) -> APIRouter:
    api = APIRouter(prefix="/v1/counsellors", tags=["counsellors"], route_class=AuthFirstRoute)
    Readable = Annotated[Counsellor, Depends(schedule_auth(keys, ctx.counsellors))]

    @api.get("/{counsellor_id}/schedule", response_model=Schedule)
    async def schedule(counsellor_id: str, day: date, counsellor: Readable) -> Any:
        """The counsellor's consultations and held times on one JST day: staff of the counsellor's
        office, or the counsellor themselves (role counsellor), may read it."""
        if counsellor.office_id not in ctx.policies:
            raise HTTPException(404, "no such counsellor")
        entries = await day_of(ctx, counsellor_id, counsellor.office_id, day)
        return Schedule(
            counsellor_id=counsellor_id, office_id=counsellor.office_id, day=day, reservations=entries
        )

    return api
