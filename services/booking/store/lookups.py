"""Staff look a person's bookings up by a keyed hash of the phone, email or job-seeker number (R12).

A person's bookings at one office under one value are numbered slots, `_id =
"<office>|<field>|<hash>#<n>"` holding a booking id: found by `_id` alone (what FerretDB answers from
an index) and read by probing n = 1, 2, … until the first free slot, so a look-up touches as many
documents as that person has bookings, whatever the office's history. A booking takes the first free
slot with a unique insert (of two bookings taking one number at once, one moves on to the next), so
numbers are taken in order and never left free in between. Slots are written before the booking;
a slot whose booking was never committed, or that does not carry the value, is ignored by readers.
"""

from __future__ import annotations

import asyncio

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.mongo import Doc

#: slots probed at once
PROBE = 8


class Lookups:
    def __init__(self, collection: AsyncCollection[Doc]) -> None:
        self.collection = collection

    @staticmethod
    def slot(office_id: str, field: str, digest: str, n: int) -> str:
        return f"{office_id}|{field}|{digest}#{n}"

    async def read(self, office_id: str, field: str, digest: str) -> list[str]:
        """The booking ids under this value, in the order they were booked (repeats removed)."""
        ids: list[str] = []
        n = 1
        while True:
            probes = [self.slot(office_id, field, digest, n + i) for i in range(PROBE)]
            found = await asyncio.gather(
                *(self.collection.find_one({"_id": p}, {"booking_id": 1}) for p in probes)
            )
            for doc in found:
                if doc is None:
                    return list(dict.fromkeys(ids))
                ids.append(doc["booking_id"])
            n += PROBE

    async def add(self, office_id: str, field: str, digest: str, booking_id: str) -> None:
        """List `booking_id` under the value (once: a retried insert finds its slot taken by itself)."""
        held = await self.read(office_id, field, digest)
        if booking_id in held:
            return
        n = len(held) + 1
        while True:
            try:
                await self.collection.insert_one(
                    {"_id": self.slot(office_id, field, digest, n), "booking_id": booking_id}
                )
                return
            except DuplicateKeyError:  # another booking took this number first: the next one
                n += 1
