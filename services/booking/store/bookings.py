"""Bookings in MongoDB: personal data sealed per field (R12), each state change a new version.

Every change of a booking is one insert carrying the whole state and its events (outbox), keyed by
(booking, version): of two concurrent writers that read the same version only one commits, the other
reads again (see shared/store/versioned.py for why not a conditional update on FerretDB).

Lists are read by `_id` alone (FerretDB answers nothing else from an index): an office's bookings of
one JST day are the markers of that day's bucket (`listings.py`; the day of the appointment, or of
the first wished window before there is one), each booking loaded by `_id`; a person's bookings
under a phone, email or job-seeker number are numbered slots (`lookups.py`).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from services.booking.crypto import Vault
from services.booking.domain import (
    Attendance,
    Booking,
    Cancellation,
    Change,
    IdentityCheck,
    Person,
    Status,
    Window,
)
from services.booking.store.listings import Listing, Place, list_existing, placements, settle
from services.booking.store.lookups import Lookups
from shared.clock import JST
from shared.events import Alternative, Appointment, Envelope
from shared.mongo import Doc
from shared.store.buckets import period_key
from shared.store.versioned import Conflict, VersionedStore

#: sealed per field (R12)
PII_FIELDS = ("name", "name_kana", "address", "phone", "email", "jobseeker_number", "topic", "notice_email")
#: keyed-hash indexes staff look bookings up by
LOOKUPS = ("phone", "email", "jobseeker_number")
#: the bucket kind of an office's bookings per JST day
DAYS = "booking_days"


def day_of(state: Doc) -> Place:
    """A booking is listed on the JST day of `sort_at`: its appointment, or its first wished window."""
    return Place(state["office_id"], period_key(state["sort_at"], "day"))


class BookingStore:
    def __init__(self, versions: VersionedStore, vault: Vault, db: AsyncDatabase[Doc]) -> None:
        self.versions = versions
        self.vault = vault
        self.days = Listing(db, DAYS, "day", day_of)
        self.lookups = Lookups(db["booking_lookups"])

    async def insert(self, booking: Booking, events: list[Envelope[Any]]) -> bool:
        """The booking and its first events, as version 1; False if it already exists."""
        for f, digest in self._lookups(booking).items():  # slots first: a crash leaves one unused
            await self.lookups.add(booking.office_id, f, digest, booking.booking_id)
        booking.version = 0
        try:
            await self._commit(booking, events)
        except Conflict:
            return False
        return True

    async def save(self, booking: Booking, events: list[Envelope[Any]]) -> None:
        """The next version with its events; Conflict if another writer committed it first."""
        await self._commit(booking, events)

    async def _commit(self, booking: Booking, events: list[Envelope[Any]]) -> None:
        version, state = booking.version + 1, self.to_doc(booking)
        listings = [self.days]
        state["placed"] = await placements(listings, booking.booking_id, version, booking.placed, state)
        await self.versions.commit(booking.booking_id, version, state, events)
        await settle(listings, booking.booking_id, booking.placed, state["placed"])
        booking.version, booking.placed = version, state["placed"]

    async def get(self, booking_id: str) -> Booking | None:
        doc = await self.versions.load(booking_id)
        return self.from_doc(doc) if doc else None

    async def on_day(self, office_id: str, day: str) -> list[Doc]:
        """The office's bookings listed on one JST day (`YYYYMMDD`), as stored, by `sort_at`."""
        docs = await self.days.read(office_id, day, self.versions.load)
        return sorted(docs, key=lambda d: (d["sort_at"], d["_id"]))

    async def find(
        self,
        office_id: str,
        *,
        after: datetime,
        before: datetime,
        status: list[str] | None = None,
        limit: int = 50,
        skip: int = 0,
    ) -> list[Booking]:
        """The office's bookings with `sort_at` in [after, before), by `sort_at`: the day buckets of
        that span, in order, until the page is full."""
        found: list[Doc] = []
        day = after.astimezone(JST).date()
        last = (before - timedelta(microseconds=1)).astimezone(JST).date()
        while day <= last and len(found) < skip + limit:
            docs = await self.on_day(office_id, period_key(day, "day"))
            found += [d for d in docs if _matches(d, status, after, before)]
            day += timedelta(days=1)
        return [self.from_doc(d) for d in found[skip : skip + limit]]

    async def looked_up(
        self,
        office_id: str,
        lookup: tuple[str, str],
        *,
        status: list[str] | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        limit: int = 50,
        skip: int = 0,
    ) -> list[Booking]:
        """The office's bookings of the person with this phone, email or job-seeker number."""
        field, value = lookup
        digest = self.vault.index(field, value)
        ids = await self.lookups.read(office_id, field, digest)
        docs = await asyncio.gather(*(self.versions.load(i) for i in ids))
        mine = [
            d
            for d in docs
            if d is not None
            and d["office_id"] == office_id
            and d.get("lookup", {}).get(field) == digest  # a slot of a booking never committed
            and _matches(d, status, after, before)
        ]
        mine.sort(key=lambda d: (d["sort_at"], d["_id"]))
        return [self.from_doc(d) for d in mine[skip : skip + limit]]

    async def index_existing(self) -> int:
        """Day markers and look-up slots for bookings written before they existed (idempotent)."""

        async def slots(state: Doc) -> None:
            for f, digest in state.get("lookup", {}).items():
                await self.lookups.add(state["office_id"], f, digest, state["_id"])

        return await list_existing(self.versions, [self.days], slots)

    def _lookups(self, b: Booking) -> dict[str, str]:
        person = asdict(b.person)
        return {f: self.vault.index(f, v) for f in LOOKUPS if (v := person[f])}

    # ----------------------------------------------------------------- mapping

    def _ctx(self, booking_id: str, f: str) -> str:
        return f"booking:{booking_id}:{f}"

    def to_doc(self, b: Booking) -> Doc:
        person = asdict(b.person)
        appt = b.appointment
        return {
            "office_id": b.office_id,
            "portal_id": b.portal_id,
            "request_id": b.request_id,
            "correlation_id": b.correlation_id,
            "status": b.status.value,
            "created_at": b.created_at,
            "updated_at": b.updated_at,
            "windows": [{"start": w.start, "end": w.end} for w in b.windows],
            "duration_minutes": b.duration_minutes,
            "companions": b.companions,
            "area": b.area,
            "terms_version": b.terms_version,
            "terms_agreed_at": b.terms_agreed_at,
            "pii": {
                f: self.vault.seal(v, self._ctx(b.booking_id, f)) for f in PII_FIELDS if (v := person[f])
            },
            "lookup": self._lookups(b),
            "person_key": b.person_key,
            "appointment": appt.model_dump() if appt else None,
            "alternatives": [a.model_dump() for a in b.alternatives],
            "hold_expires_at": b.hold_expires_at,
            "attendance": asdict(b.attendance) if b.attendance else None,
            "identity_check": asdict(b.identity_check) if b.identity_check else None,
            "cancellation": asdict(b.cancellation) if b.cancellation else None,
            "completion": asdict(b.completion) if b.completion else None,
            "rejection": b.rejection,
            "notices_sent": b.notices_sent,
            "terms_notices": b.terms_notices,
            "history": [{"status": c.status.value, "at": c.at, "note": c.note} for c in b.history],
            "sort_at": appt.start if appt else min(w.start for w in b.windows),
        }

    def from_doc(self, d: Doc) -> Booking:
        pii = {f: self.vault.open(v, self._ctx(d["_id"], f)) for f, v in d.get("pii", {}).items()}
        return Booking(
            booking_id=d["_id"],
            office_id=d["office_id"],
            portal_id=d["portal_id"],
            request_id=d["request_id"],
            correlation_id=d["correlation_id"],
            status=Status(d["status"]),
            created_at=d["created_at"],
            updated_at=d["updated_at"],
            windows=[Window(w["start"], w["end"]) for w in d["windows"]],
            duration_minutes=d["duration_minutes"],
            person=Person(**pii),
            person_key=d["person_key"],
            terms_version=d["terms_version"],
            terms_agreed_at=d["terms_agreed_at"],
            companions=list(d.get("companions", [])),
            area=d.get("area"),
            appointment=Appointment.model_validate(d["appointment"]) if d.get("appointment") else None,
            alternatives=[Alternative.model_validate(a) for a in d.get("alternatives", [])],
            hold_expires_at=d.get("hold_expires_at"),
            attendance=Attendance(**d["attendance"]) if d.get("attendance") else None,
            identity_check=IdentityCheck(**d["identity_check"]) if d.get("identity_check") else None,
            cancellation=Cancellation(**d["cancellation"]) if d.get("cancellation") else None,
            completion=Window(**d["completion"]) if d.get("completion") else None,
            rejection=d.get("rejection"),
            notices_sent=list(d.get("notices_sent", [])),
            terms_notices=list(d.get("terms_notices", [])),
            history=[Change(Status(c["status"]), c["at"], c.get("note", "")) for c in d.get("history", [])],
            version=d["version"],
            placed=dict(d.get("placed") or {}),
        )


def _matches(d: Doc, status: list[str] | None, after: datetime | None, before: datetime | None) -> bool:
    return (
        (not status or d["status"] in status)
        and (after is None or d["sort_at"] >= after)
        and (before is None or d["sort_at"] < before)
    )
