"""The booking service's indexes, in one place (created at start-up), and the listings of data
written before the listings existed.

Every read a person or a handler waits for goes by `_id` (FerretDB answers nothing else from an
index): bookings, people, requests, credentials, job seekers, look-up slots. The listings are buckets
(`shared.store.buckets`): on FerretDB a collection per bucket, read whole; on MongoDB one collection
per kind with the index `bucket_1`, made here. The services/booking/README.md table "Reads and
indexes" says which read uses which.
"""

from __future__ import annotations

import contextlib
import logging

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.booking.store.access import CredentialStore
from services.booking.store.bookings import BookingStore
from services.booking.store.people import PersonStore
from shared.mongo import Doc

log = logging.getLogger("consult.booking")

#: indexes earlier versions made for scans no read makes any more: dropped where found
OBSOLETE = {
    "bookings": (
        "office_id_1_sort_at_1",
        "person_key_1",
        "lookup.phone_1",
        "lookup.email_1",
        "lookup.jobseeker_number_1",
    ),
    "people": ("office_id_1",),
    "requests": ("booking_id_1",),
}
#: recorded once the data written before the listings is listed (`consultctl booking list-existing`)
LISTED = "listings-v1"


async def ensure(
    db: AsyncDatabase[Doc], bookings: BookingStore, people: PersonStore, credentials: CredentialStore
) -> None:
    for listing in (bookings.days, *people.listings):
        await listing.ensure_indexes()  # MongoDB: `bucket_1` of each kind; FerretDB: nothing
    await credentials.ensure_indexes()  # revoking and flagging a portal's keys by `subject` (consultctl)
    for name, indexes in OBSOLETE.items():
        held = await db[name].index_information()
        for index in indexes:
            if index in held:
                await db[name].drop_index(index)


async def list_existing(
    db: AsyncDatabase[Doc], bookings: BookingStore, people: PersonStore, *, again: bool = False
) -> dict[str, int] | None:
    """List the bookings and people written before the listings (idempotent); once per database
    unless `again`. None when it was done already."""
    meta = db["booking_meta"]
    if not again and await meta.find_one({"_id": LISTED}) is not None:
        return None
    done = {"bookings": await bookings.index_existing(), "people": await people.index_existing()}
    with contextlib.suppress(DuplicateKeyError):  # listed before (again, or by another replica at once)
        await meta.insert_one({"_id": LISTED, **done})
    if any(done.values()):
        log.info("listed what was written before the listings: %s", done)
    return done
