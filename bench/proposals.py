"""Changes to shared/ the bench proposes, measured here before anyone adopts them (shared/ is the lead's).

`IdOnlyMarkRelay`: FerretDB 1.24 (SQLite) pushes a filter down to SQLite only when it is `_id`
alone; `{"_id": x, "outbox_seq": n}` makes every relay mark a scan of the whole collection with
each document decoded in Go. This relay marks by `_id` alone and checks the sequence afterwards
with a `find_one` by `_id` (an index lookup):

    update_one({_id}, {$max: {outbox_sent: total}, $set: {outbox_pending: false}})
    find_one({_id}).outbox_seq != seq read  ->  update_one({_id}, {$set: {outbox_pending: true}})

An append that lands between the relay's read and its mark moved `outbox_seq`, so the check puts
the flag back; one after the check sets the flag itself. `$max` keeps `outbox_sent` monotonic, which
the `$lt` guard of the current fallback update did.
"""

from __future__ import annotations

from shared.events import parse_event
from shared.mongo import Doc
from shared.outbox import OutboxRelay


class IdOnlyMarkRelay(OutboxRelay):
    async def _relay(self, doc: Doc) -> None:
        outbox: list[Doc] = doc.get("outbox", [])
        sent = int(doc.get("outbox_sent", 0))
        for raw in outbox[sent:]:
            await self.publisher.publish(parse_event(raw))
            self.published += 1
        seq = doc.get("outbox_seq", 0)
        await self.collection.update_one(
            {"_id": doc["_id"]}, {"$max": {"outbox_sent": len(outbox)}, "$set": {"outbox_pending": False}}
        )
        now = await self.collection.find_one({"_id": doc["_id"]}, {"outbox_seq": 1})
        if now is not None and now.get("outbox_seq", 0) != seq:
            await self.collection.update_one({"_id": doc["_id"]}, {"$set": {"outbox_pending": True}})
