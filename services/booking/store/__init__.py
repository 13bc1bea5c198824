"""The only package of the booking service that talks to MongoDB: one store per collection."""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from services.booking.crypto import Vault
from services.booking.store.access import Credential, CredentialStore, DeviceStore
from services.booking.store.bookings import BookingStore
from services.booking.store.people import JobseekerStore, PersonStore
from services.booking.store.requests import RequestStore
from shared.mongo import Doc
from shared.store.versioned import Conflict, VersionedStore

__all__ = ["Conflict", "Credential", "Stores"]


@dataclass
class Stores:
    bookings: BookingStore
    requests: RequestStore
    people: PersonStore
    jobseekers: JobseekerStore
    credentials: CredentialStore
    devices: DeviceStore

    @classmethod
    def open(cls, db: AsyncDatabase[Doc], vault: Vault) -> Stores:
        return cls(
            # R12: every event kept for an outbox is sealed with the vault, like the fields
            bookings=BookingStore(VersionedStore(db["bookings"], db["booking_changes"], vault), vault),
            requests=RequestStore(db["requests"], vault),
            people=PersonStore(VersionedStore(db["people"], db["people_changes"], vault)),
            jobseekers=JobseekerStore(db["jobseekers"], vault),
            credentials=CredentialStore(db["credentials"]),
            devices=DeviceStore(db["devices"], vault),
        )

    async def ensure_indexes(self) -> None:
        await self.bookings.ensure_indexes()
        await self.requests.ensure_indexes()
        await self.people.ensure_indexes()
        await self.credentials.ensure_indexes()
