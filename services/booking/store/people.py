"""People the office counts no-shows of or refuses (R09, R13), and the HW job-seeker registry (R02, R03)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from services.booking.crypto import Vault
from services.booking.refusals import NoShowMark, PersonRecord, Refusal, Review
from services.booking.rules import RegisteredJobseeker
from shared.commands import JobseekerRecord
from shared.events import Envelope
from shared.mongo import Doc
from shared.store.locks import KeyedLocks
from shared.store.versioned import VersionedStore


class PersonStore:
    """Keyed by the person's pseudonym; no personal data is kept here. Versioned like bookings."""

    def __init__(self, versions: VersionedStore) -> None:
        self.versions = versions

    async def ensure_indexes(self) -> None:
        await self.versions.heads.create_index("office_id")

    async def get(self, person_key: str) -> PersonRecord | None:
        d = await self.versions.load(person_key)
        return self._record(d) if d else None

    def _record(self, d: Doc) -> PersonRecord:
        return PersonRecord(
            person_key=d["_id"],
            office_id=d["office_id"],
            no_shows=[NoShowMark(**m) for m in d.get("no_shows", [])],
            counted_from=d.get("counted_from"),
            refusal=Refusal(**d["refusal"]) if d.get("refusal") else None,
            review=Review(**d["review"]) if d.get("review") else None,
            version=d["version"],
        )

    async def refused(self, office_id: str, now: datetime) -> list[PersonRecord]:
        docs = await self.versions.find(
            {"office_id": office_id, "refusal": {"$ne": None}}, sort="_id", limit=1000
        )
        people = [self._record(d) for d in docs]
        return [p for p in people if p.refusal_in_force(now)]

    async def in_review(self, office_id: str) -> list[PersonRecord]:
        """People whose no-shows reached the threshold, for staff to decide (R09, `decide: staff`)."""
        docs = await self.versions.find(
            {"office_id": office_id, "review": {"$ne": None}}, sort="_id", limit=1000
        )
        return [self._record(d) for d in docs]

    async def save(self, person: PersonRecord, events: list[Envelope[Any]]) -> None:
        """The next version with its events; Conflict if another writer committed it first."""
        state: Doc = {
            "office_id": person.office_id,
            "no_shows": [asdict(m) for m in person.no_shows],
            "counted_from": person.counted_from,
            "refusal": asdict(person.refusal) if person.refusal else None,
            "review": asdict(person.review) if person.review else None,
        }
        await self.versions.commit(person.person_key, person.version + 1, state, events)
        person.version += 1


class JobseekerStore:
    """HW's registry as fed by the job-seeker system; personal data sealed (R12)."""

    def __init__(self, collection: AsyncCollection[Doc], vault: Vault) -> None:
        self.collection = collection
        self.vault = vault
        self._locks = KeyedLocks()

    def _id(self, office_id: str, number: str) -> str:
        return self.vault.index("jobseeker", f"{office_id}\x1f{number}")

    async def upsert(self, rec: JobseekerRecord) -> bool:
        """Apply a record unless a newer one is held (out-of-order delivery); True if applied.

        Read and replace by `_id` (FerretDB's only indexed filter); records of one job seeker are
        applied one at a time in this process. Two replicas applying two records of the same job
        seeker in the same instant could keep the older one: the next record repairs it.
        """
        _id = self._id(rec.office_id, rec.jobseeker_number)
        async with self._locks.hold(_id):
            held = await self.collection.find_one({"_id": _id}, {"occurred_at": 1})
            if held is not None and held["occurred_at"] >= rec.sent_at:
                return False
            fields = {"number": rec.jobseeker_number, "name": rec.name, "phone": rec.phone}
            if rec.mypage_email:
                fields["mypage_email"] = rec.mypage_email
            doc = {
                "office_id": rec.office_id,
                "occurred_at": rec.sent_at,
                "active": rec.active,
                "pii": {k: self.vault.seal(v, f"jobseeker:{_id}:{k}") for k, v in fields.items()},
            }
            await self.collection.replace_one({"_id": _id}, doc, upsert=True)
        return True

    async def get(self, office_id: str, number: str) -> RegisteredJobseeker | None:
        _id = self._id(office_id, number)
        d = await self.collection.find_one({"_id": _id})
        if d is None:
            return None
        pii = {k: self.vault.open(v, f"jobseeker:{_id}:{k}") for k, v in d["pii"].items()}
        return RegisteredJobseeker(
            number=pii["number"],
            name=pii["name"],
            phone=pii["phone"],
            mypage_email=pii.get("mypage_email"),
            active=d["active"],
        )
