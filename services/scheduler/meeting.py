"""R16: a room that opens, in the office's meeting app, for each consultation.

Two providers, chosen per app in the office policy (`meeting[].provider`):

- `graph` (Microsoft Teams): a meeting is created through Microsoft Graph for each version of the
  appointment, organised by the counsellor's account, with `externalId` = the appointment id, so a
  retried creation returns the same meeting (`services/scheduler/graph.py`). A moved consultation
  gets a new meeting and the old one is deleted; a cancelled one is deleted. Graph answering 429 or
  5xx is a `MeetingUnavailable` (a transient error: the message waits in a delay queue, at least
  as long as Graph's `Retry-After`); any other refusal is `NoRoom` and the request goes to staff.
- `pre-issued` (TeleOffice, whose host registers meetings in the app; Teams or Skype for Business
  Server standing links): staff register each counsellor's join URLs (`Counsellor.rooms`). A room is
  claimed for the slot's cells exactly as a counsellor is (`reservations`, unique per room and
  cell; the room's key is its join URL, so the same URL registered twice is still one room): no
  two consultations that overlap share a room, and none free sends the request to staff.

Deleting a Graph meeting must not be lost when Graph is away: the deletion is recorded first
(`meeting_closes`, by `_id`) and retried by the timer sweep until Graph confirms it (`closed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.scheduler.availability import Counsellor, Room
from services.scheduler.graph import GraphMeetings, GraphRefused, GraphRetryLater
from services.scheduler.slots import Slot
from services.scheduler.store.reservations import BOOKED, Reservations
from shared.clock import Clock
from shared.events import appointment_id
from shared.messaging import TransientError
from shared.mongo import Doc
from shared.policy import MeetingApp, MeetingConfig, OfficePolicy

log = logging.getLogger("consult.scheduler.meeting")

GRAPH, PRE_ISSUED = "graph", "pre-issued"
ROOM_PREFIX = "room:"  # a room's reservations are those of a pseudo-counsellor "room:<key>"
CLOSE_RETRY = timedelta(minutes=1)
CALL_TIMEOUT = 30.0  # one Graph call, token included


@dataclass(frozen=True)
class MeetingRoom:
    """Where one consultation meets; stored on the request (`room`) to delete or query it later."""

    app: MeetingApp
    url: str
    provider: str = PRE_ISSUED
    meeting_id: str | None = None  # the app's id a person may type in
    passcode: str | None = None
    graph_id: str | None = None  # Graph's onlineMeeting id (delete, attendance)
    organizer: str | None = None  # Graph: the organiser's Entra user
    room_id: str | None = None  # pre-issued: the counsellor's registered room
    cells: tuple[str, ...] = ()  # pre-issued: the room's reserved cells

    def record(self) -> Doc:
        return {**asdict(self), "app": self.app.value, "cells": list(self.cells)}

    @classmethod
    def of(cls, doc: Doc | None) -> MeetingRoom | None:
        if not doc:
            return None
        return cls(**{**doc, "app": MeetingApp(doc["app"]), "cells": tuple(doc.get("cells") or ())})


class NoRoom(Exception):
    """No room can be had for this slot: staff coordinate (R05) with the reason."""

    def __init__(self, reason: Literal["no_free_room", "meeting_refused"], detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class MeetingUnavailable(TransientError):
    """The meeting service is away or throttling: try again after `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def room_key(join_url: str) -> str:
    """One room per join URL, whichever counsellor registered it."""
    return ROOM_PREFIX + hashlib.sha256(join_url.strip().encode()).hexdigest()[:24]


def subject(policy: OfficePolicy) -> str:
    """The meeting's title: the office's, never the person's (R12)."""
    return f"オンライン相談（{policy.name}）"


class Rooms:
    """Opens and closes consultations' rooms through the office's provider."""

    def __init__(
        self,
        db: AsyncDatabase[Doc],
        graph: Callable[[str], GraphMeetings | None],
        reservations: Reservations,
        clock: Clock,
        dev_hosts: Sequence[str] = (),
    ) -> None:
        self.dev_hosts = tuple(h.lower() for h in dev_hosts)  # dev/test join hosts (never prod)
        self.graph = graph  # office id -> its Graph client (None: not configured)
        self.reservations, self.clock = reservations, clock
        self.pending = db["meeting_closes"]  # deletions Graph has not confirmed yet
        self.closed = db["meeting_closed"]  # deletions Graph confirmed (read by _id only)
        self.stats = {"created": 0, "closed": 0, "no_room": 0, "unavailable": 0}

    @staticmethod
    def config(policy: OfficePolicy, app: MeetingApp) -> MeetingConfig:
        config = next((m for m in policy.meeting if m.app == app), None)
        if config is None:
            raise NoRoom("meeting_refused", f"R16: {policy.office_id} does not use {app.value}")
        return config

    async def open(
        self, policy: OfficePolicy, counsellor: Counsellor, slot: Slot, *, booking_id: str, version: int
    ) -> MeetingRoom:
        """A room for version `version` of the booking's appointment in `slot`."""
        app = counsellor.app_for(policy)
        config = self.config(policy, app)
        try:
            if config.provider == GRAPH:
                room = await self._graph_meeting(
                    policy, counsellor, slot, appointment_id(booking_id, version)
                )
            else:
                room = await self._claim_room(policy, counsellor, app, slot, booking_id)
        except NoRoom:
            self.stats["no_room"] += 1
            raise
        self.stats["created"] += 1
        return room

    async def _graph_meeting(
        self, policy: OfficePolicy, counsellor: Counsellor, slot: Slot, external_id: str
    ) -> MeetingRoom:
        client = self.graph(policy.office_id)
        if client is None:
            raise NoRoom("meeting_refused", f"R16: no Graph credentials for {policy.office_id}")
        if not counsellor.organizer:
            raise NoRoom("meeting_refused", f"R16: {counsellor.counsellor_id} has no Teams organiser")
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                meeting = await client.create_or_get(
                    counsellor.organizer, external_id, subject(policy), slot.start, slot.end
                )
        except GraphRetryLater as exc:
            self.stats["unavailable"] += 1
            raise MeetingUnavailable(f"Microsoft Graph: {exc}", exc.retry_after) from exc
        except TimeoutError as exc:
            self.stats["unavailable"] += 1
            raise MeetingUnavailable("Microsoft Graph did not answer in time", CALL_TIMEOUT) from exc
        except GraphRefused as exc:
            log.warning("Graph refused a meeting for %s: %s %s", external_id, exc.status, exc.code)
            raise NoRoom("meeting_refused", f"Microsoft Graph {exc.status} {exc.code}") from exc
        return MeetingRoom(
            MeetingApp.TEAMS,
            meeting.join_url,
            provider=GRAPH,
            meeting_id=meeting.meeting_id,  # Teams' meeting id and passcode, for joining by number
            passcode=meeting.passcode,
            graph_id=meeting.id,
            organizer=counsellor.organizer,
        )

    async def _claim_room(
        self, policy: OfficePolicy, counsellor: Counsellor, app: MeetingApp, slot: Slot, booking_id: str
    ) -> MeetingRoom:
        rooms = [r for r in counsellor.rooms if r.app == app]
        if not rooms:
            raise NoRoom(
                "no_free_room", f"R16: {counsellor.counsellor_id} has no {app.value} room registered"
            )
        for room in rooms:
            claim = replace(slot, counsellor_id=room_key(room.join_url))
            if await self.reservations.reserve(
                claim, office_id=policy.office_id, booking_id=booking_id, now=self.clock.now(), kind=BOOKED
            ):
                return _pre_issued(room, tuple(claim.cell_ids))
        raise NoRoom(
            "no_free_room", f"R16: every {app.value} room of {counsellor.counsellor_id} is in use then"
        )

    # ----------------------------------------------------------------- closing

    async def close(self, office_id: str, room: MeetingRoom | None) -> None:
        """Delete a Graph meeting that no consultation uses any more (a pre-issued room's cells are
        freed with the booking's). Recorded first, so a failure is retried by `retry_closes`."""
        if room is None or room.provider != GRAPH or not room.graph_id:
            return
        if await self.closed.find_one({"_id": room.graph_id}) is not None:
            return
        doc = {"_id": room.graph_id, "office_id": office_id, "organizer": room.organizer, "tries": 0}
        with contextlib.suppress(DuplicateKeyError):
            await self.pending.insert_one(doc)
        await self._try_close(doc)

    async def _try_close(self, doc: Doc) -> bool:
        client = self.graph(doc["office_id"])
        if client is None:
            return False
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                await client.delete(doc["organizer"], doc["_id"])
        except (GraphRetryLater, TimeoutError) as exc:
            log.warning("Graph meeting %s not deleted yet: %s", doc["_id"], exc)
            await self.pending.update_one({"_id": doc["_id"]}, {"$inc": {"tries": 1}})
            return False
        except GraphRefused as exc:  # gone already (404 counts as deleted) or not ours: stop trying
            log.warning("Graph refused deleting meeting %s: %s %s", doc["_id"], exc.status, exc.code)
        with contextlib.suppress(DuplicateKeyError):
            await self.closed.insert_one({"_id": doc["_id"], "office_id": doc["office_id"]})
        await self.pending.delete_one({"_id": doc["_id"]})
        self.stats["closed"] += 1
        return True

    async def retry_closes(self) -> int:
        """The sweep's part: deletions Graph has not confirmed (a small collection: pending only)."""
        done = 0
        for doc in await self.pending.find({}).limit(50).to_list():
            done += await self._try_close(doc)
        return done

    async def joined(self, office_id: str, room: MeetingRoom, by: datetime) -> datetime | None:
        """R08: when someone other than the organiser first joined the Teams meeting, if by `by`;
        None when nobody did or Graph cannot say (no report yet, an error, not a Graph meeting):
        then staff's record decides, as for pre-issued rooms."""
        client = self.graph(office_id)
        if client is None or room.provider != GRAPH or not room.graph_id or not room.organizer:
            return None
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                records = await client.attendance(room.organizer, room.graph_id)
        except (GraphRetryLater, GraphRefused, TimeoutError) as exc:
            log.info("attendance of %s not available from Graph: %s", room.graph_id, exc)
            return None
        joins = [
            r.first_join
            for r in records or ()
            if (r.role or "").lower() != "organizer" and r.first_join is not None and r.first_join <= by
        ]
        return min(joins, default=None)


def _pre_issued(room: Room, cells: tuple[str, ...]) -> MeetingRoom:
    return MeetingRoom(
        room.app,
        room.join_url,
        provider=PRE_ISSUED,
        meeting_id=room.meeting_id,
        passcode=room.passcode,
        room_id=room.room_id,
        cells=cells,
    )
