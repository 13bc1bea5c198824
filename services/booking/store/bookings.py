"""Bookings in MongoDB: personal data sealed per field (R12), each state change a new version.

Every change of a booking is one insert carrying the whole state and its events (outbox), keyed by
(booking, version): of two concurrent writers that read the same version only one commits, the other
reads again (see shared/store/versioned.py for why not a conditional update on FerretDB).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from pymongo import ASCENDING

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
from shared.events import Alternative, Appointment, Envelope
from shared.mongo import Doc
from shared.store.versioned import Conflict, VersionedStore

#: sealed per field (R12)
PII_FIELDS = ("name", "name_kana", "address", "phone", "email", "jobseeker_number", "topic", "notice_email")
#: keyed-hash indexes staff look bookings up by
LOOKUPS = ("phone", "email", "jobseeker_number")


class BookingStore:
    def __init__(self, versions: VersionedStore, vault: Vault) -> None:
        self.versions = versions
        self.vault = vault

    async def ensure_indexes(self) -> None:
        heads = self.versions.heads
        await heads.create_index([("office_id", ASCENDING), ("sort_at", ASCENDING)])
        await heads.create_index("person_key")
        for f in LOOKUPS:
            await heads.create_index(f"lookup.{f}")

    async def insert(self, booking: Booking, events: list[Envelope[Any]]) -> bool:
        """The booking and its first events, as version 1; False if it already exists."""
        try:
            await self.versions.commit(booking.booking_id, 1, self.to_doc(booking), events)
        except Conflict:
            return False
        booking.version = 1
        return True

    async def save(self, booking: Booking, events: list[Envelope[Any]]) -> None:
        """The next version with its events; Conflict if another writer committed it first."""
        await self.versions.commit(booking.booking_id, booking.version + 1, self.to_doc(booking), events)
        booking.version += 1

    async def get(self, booking_id: str) -> Booking | None:
        doc = await self.versions.load(booking_id)
        return self.from_doc(doc) if doc else None

    async def find(
        self,
        office_id: str,
        *,
        status: list[str] | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        lookup: tuple[str, str] | None = None,
        limit: int = 50,
        skip: int = 0,
    ) -> list[Booking]:
        query: Doc = {"office_id": office_id}
        if status:
            query["status"] = {"$in": status}
        if after or before:
            query["sort_at"] = {k: v for k, v in (("$gte", after), ("$lt", before)) if v is not None}
        if lookup:
            query[f"lookup.{lookup[0]}"] = self.vault.index(*lookup)
        docs = await self.versions.find(query, sort="sort_at", skip=skip, limit=limit)
        found = [self.from_doc(d) for d in docs]
        return [b for b in found if not status or b.status.value in status]  # a lagging head moved on

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
            "lookup": {f: self.vault.index(f, v) for f in LOOKUPS if (v := person[f])},
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
        )
