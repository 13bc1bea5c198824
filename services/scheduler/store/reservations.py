"""Reserved grid cells: one document per (counsellor, cell start), unique — the double-booking guard.

Two requests, or two replicas, that want the same counsellor at the same time both insert the same
key; the database lets exactly one through and the other moves on to its next candidate. A multi-cell
appointment inserts its cells in time order and takes back what it inserted if a later cell is
taken, so two contenders never both fail on each other (ordered acquisition).

kind "booked" is a confirmed appointment; kind "held" is an alternative proposed and held until
`hold_until` (R05). An expired hold is reclaimed by whoever needs the cell.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.scheduler.slots import Cell, Slot, cell_id
from shared.mongo import Doc
from shared.store.conditional import delete_if, find_one_and_update_if, update_if

BOOKED, HELD = "booked", "held"


def _label(doc: Doc) -> Doc:
    return {k: doc.get(k) for k in ("kind", "option_id", "hold_until", "appointment_start", "at")}


class Reservations:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["reservations"]
        self.conflicts = 0  # reservations refused by the unique index (lost races, taken cells)

    async def taken(self, office_id: str, start: datetime, end: datetime, now: datetime) -> set[Cell]:
        """Cells of the office's counsellors in [start, end) that are booked or held (unexpired)."""
        docs = await self.collection.find(
            {"office_id": office_id, "start": {"$gte": start, "$lt": end}},
            {"counsellor_id": 1, "start": 1, "kind": 1, "hold_until": 1},
        ).to_list()
        return {
            (d["counsellor_id"], d["start"])
            for d in docs
            if d["kind"] == BOOKED or d.get("hold_until") is None or d["hold_until"] > now
        }

    async def reserve(
        self,
        slot: Slot,
        *,
        office_id: str,
        booking_id: str,
        now: datetime,
        kind: str = BOOKED,
        option_id: str | None = None,
        hold_until: datetime | None = None,
    ) -> bool:
        """All cells of the slot for this booking, or none. Cells the booking already has are reused."""
        inserted: list[str] = []
        relabelled: list[Doc] = []
        for start in slot.cells:
            doc = {
                "_id": cell_id(slot.counsellor_id, start),
                "counsellor_id": slot.counsellor_id,
                "start": start,
                "office_id": office_id,
                "booking_id": booking_id,
                "appointment_start": slot.start,
                "kind": kind,
                "option_id": option_id,
                "hold_until": hold_until,
                "at": now,
            }
            outcome = await self._claim(doc, now)
            if outcome is None:
                self.conflicts += 1
                await self._undo(booking_id, inserted, relabelled)
                return False
            if isinstance(outcome, dict):
                relabelled.append(outcome)
            else:
                inserted.append(str(doc["_id"]))
        return True

    async def _claim(self, doc: Doc, now: datetime) -> Doc | bool | None:
        """True: inserted; the previous document: it was this booking's and is re-labelled;
        None: another booking's (or this booking's appointment, which a hold must not take over)."""
        for _ in range(2):
            try:
                await self.collection.insert_one(doc)
                return True
            except DuplicateKeyError:
                pass
            existing = await self.collection.find_one({"_id": doc["_id"]})
            if existing is None:
                continue  # released meanwhile: try again
            if existing["booking_id"] == doc["booking_id"]:
                if doc["kind"] == HELD and existing["kind"] == BOOKED:
                    return None  # a proposal never takes over the booking's own appointment
                mine = {"booking_id": doc["booking_id"], "kind": existing["kind"]}
                if await find_one_and_update_if(self.collection, doc["_id"], mine, {"$set": _label(doc)}):
                    return existing
                continue
            if (
                existing["kind"] == HELD
                and existing.get("hold_until") is not None
                and existing["hold_until"] <= now
            ):
                # an expired hold of another booking is reclaimed; a live one or a booking is respected
                await delete_if(self.collection, doc["_id"], {"kind": HELD, "hold_until": {"$lte": now}})
                continue
            return None
        return None

    async def _undo(self, booking_id: str, inserted: list[str], relabelled: list[Doc]) -> None:
        await self.collection.delete_many({"_id": {"$in": inserted}, "booking_id": booking_id})
        for before in relabelled:
            await update_if(
                self.collection, before["_id"], {"booking_id": booking_id}, {"$set": _label(before)}
            )

    async def release(
        self, booking_id: str, *, keep: list[str] | None = None, option_ids: list[str] | None = None
    ) -> int:
        """Free the booking's cells (all, or those of some options), except the ids in keep."""
        query: Doc = {"booking_id": booking_id}
        if keep:
            query["_id"] = {"$nin": keep}
        if option_ids is not None:
            query["option_id"] = {"$in": option_ids}
        return (await self.collection.delete_many(query)).deleted_count

    async def forget_past(self, before: datetime) -> int:
        """Housekeeping: cells of past appointments no longer guard anything (the request keeps the
        appointment); dropping them keeps the scanned collection to what lies ahead."""
        return (await self.collection.delete_many({"start": {"$lt": before}})).deleted_count

    async def of_booking(self, booking_id: str) -> list[Doc]:
        return await self.collection.find({"booking_id": booking_id}).sort("start", 1).to_list()

    async def at_cells(self, counsellor_id: str, starts: Sequence[datetime]) -> list[Doc]:
        """The counsellor's reserved cells among these cell starts, each read by `_id` (FerretDB's
        index; a range query decodes the collection there)."""
        found = await asyncio.gather(
            *(self.collection.find_one({"_id": cell_id(counsellor_id, start)}) for start in starts)
        )
        return [d for d in found if d is not None]

    async def of_counsellor(self, counsellor_id: str, start: datetime, end: datetime) -> list[Doc]:
        return (
            await self.collection.find({"counsellor_id": counsellor_id, "start": {"$gte": start, "$lt": end}})
            .sort("start", 1)
            .to_list()
        )
