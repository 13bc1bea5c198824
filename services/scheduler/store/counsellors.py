"""Counsellors per office with their weekly availability and dated exceptions."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.scheduler.availability import Counsellor
from shared.mongo import Doc


class CounsellorStore:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db["counsellors"]

    async def put(self, counsellor: Counsellor, at: Any) -> bool:
        """Create or replace; True when it was new."""
        doc = {"_id": counsellor.counsellor_id, **counsellor.model_dump(mode="json"), "updated_at": at}
        try:
            result = await self.collection.replace_one({"_id": counsellor.counsellor_id}, doc, upsert=True)
        except DuplicateKeyError:
            # Two replicas loading the seed at start-up at once (issue 20): FerretDB runs an upsert as
            # a look then an insert, so the one that looked second finds the `_id` taken. The other
            # created it: replace it, as the upsert would have.
            await self.collection.replace_one({"_id": counsellor.counsellor_id}, doc)
            return False
        return result.upserted_id is not None

    async def get(self, counsellor_id: str) -> Counsellor | None:
        doc = await self.collection.find_one({"_id": counsellor_id})
        return _model(doc) if doc else None

    async def of_office(self, office_id: str, *, active_only: bool = True) -> list[Counsellor]:
        query: Doc = {"office_id": office_id}
        if active_only:
            query["active"] = True
        docs = await self.collection.find(query).sort("_id", 1).to_list()
        return [_model(d) for d in docs]

    async def all(self) -> list[Counsellor]:
        return [_model(d) for d in await self.collection.find({}).sort("_id", 1).to_list()]


def _model(doc: Doc) -> Counsellor:
    fields = {k: v for k, v in doc.items() if k in Counsellor.model_fields}
    return Counsellor.model_validate(fields)
