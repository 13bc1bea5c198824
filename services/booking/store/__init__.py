"""The only package of the booking service that talks to MongoDB: one store per collection."""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from services.booking.crypto import Vault
from services.booking.store import indexes
from services.booking.store.access import Credential, CredentialStore, DeviceStore
from services.booking.store.bookings import BookingStore
from services.booking.store.people import JobseekerStore, PersonStore
from services.booking.store.requests import RequestStore
from shared.mongo import Doc
from shared.store.versioned import Conflict, VersionedStore

__all__ = ["Conflict", "Credential", "Stores"]


@dataclass
class Stores:
    db: AsyncDatabase[Doc]
    bookings: BookingStore
    requests: RequestStore
    people: PersonStore
    jobseekers: JobseekerStore
    credentials: CredentialStore
    devices: DeviceStore

    @classmethod
    def open(cls, db: AsyncDatabase[Doc], vault: Vault) -> Stores:
        return cls(
            db=db,
            # R12: every event kept for an outbox is sealed with the vault, like the fields
            bookings=BookingStore(VersionedStore(db["bookings"], db["booking_changes"], vault), vault, db),
            requests=RequestStore(db["requests"], vault),
            people=PersonStore(VersionedStore(db["people"], db["people_changes"], vault), db),
            jobseekers=JobseekerStore(db["jobseekers"], vault),
            credentials=CredentialStore(db["credentials"]),
            devices=DeviceStore(db["devices"], vault),
        )

    async def ensure_indexes(self) -> None:
        """Start-up: the indexes (MongoDB), then the listings of data written before them, once."""
        await indexes.ensure(self.db, self.bookings, self.people, self.credentials)
        await indexes.list_existing(self.db, self.bookings, self.people)

    async def list_existing(self) -> dict[str, int] | None:
        """`consultctl booking list-existing`: list again what has no listing (idempotent)."""
        return await indexes.list_existing(self.db, self.bookings, self.people, again=True)
