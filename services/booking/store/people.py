"""People the office counts no-shows of or refuses (R09, R13), and the HW job-seeker registry (R02, R03)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from services.booking.crypto import Vault
from services.booking.refusals import NoShowMark, PersonRecord, Refusal, Review
from services.booking.rules import RegisteredJobseeker
from services.booking.store.listings import CURRENT, Listing, Place, list_existing, placements, settle
from shared.commands import JobseekerRecord
from shared.events import Envelope
from shared.mongo import Doc
from shared.store.locks import KeyedLocks
from shared.store.versioned import VersionedStore


def _stint(state: Doc, part: str) -> Place | None:
    """Listed while the state holds a refusal (or a review); each new one is a new stint."""
    held = state.get(part)
    if not held:
        return None
    return Place(
        state["office_id"], CURRENT, held["since"].astimezone(UTC).isoformat(timespec="milliseconds")
    )


class PersonStore:
    """Keyed by the person's pseudonym; no personal data is kept here. Versioned like bookings.

    The refusal and review lists are listings (`listings.py`): one bucket per office holding the
    people refused (reviewed) there, each loaded by `_id`, so a list costs what it lists."""

    def __init__(self, versions: VersionedStore, db: AsyncDatabase[Doc]) -> None:
        self.versions = versions
        self.refusals = Listing(db, "refused_people", "day", lambda s: _stint(s, "refusal"))
        self.reviews = Listing(db, "reviewed_people", "day", lambda s: _stint(s, "review"))

    @property
    def listings(self) -> list[Listing]:
        return [self.refusals, self.reviews]

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
            placed=dict(d.get("placed") or {}),
        )

    async def refused(self, office_id: str, now: datetime) -> list[PersonRecord]:
        """People refused at the office now (R09, R13), by pseudonym."""
        docs = await self.refusals.read(
            office_id,
            CURRENT,
            self.versions.load,
            keep=lambda d: self._record(d).refusal_in_force(now) is not None,
        )
        return sorted((self._record(d) for d in docs), key=lambda p: p.person_key)

    async def in_review(self, office_id: str) -> list[PersonRecord]:
        """People whose no-shows reached the threshold, for staff to decide (R09, `decide: staff`)."""
        docs = await self.reviews.read(office_id, CURRENT, self.versions.load)
        return sorted((self._record(d) for d in docs), key=lambda p: p.person_key)

    async def save(self, person: PersonRecord, events: list[Envelope[Any]]) -> None:
        """The next version with its events; Conflict if another writer committed it first."""
        state: Doc = {
            "office_id": person.office_id,
            "no_shows": [asdict(m) for m in person.no_shows],
            "counted_from": person.counted_from,
            "refusal": asdict(person.refusal) if person.refusal else None,
            "review": asdict(person.review) if person.review else None,
        }
        version = person.version + 1
        state["placed"] = await placements(self.listings, person.person_key, version, person.placed, state)
        await self.versions.commit(person.person_key, version, state, events)
        await settle(self.listings, person.person_key, person.placed, state["placed"])
        person.version, person.placed = version, state["placed"]

    async def index_existing(self) -> int:
        """Listings for people written before they existed (idempotent); how many there were."""
        return await list_existing(self.versions, self.listings)


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
