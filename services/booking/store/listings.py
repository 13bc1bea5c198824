"""Where a versioned aggregate is listed: markers in `shared.store.buckets`, placed per version.

A listing (an office's bookings of one JST day, the people an office refuses now, the people on its
review list) is a bucket of insert-only markers; a read is `find({})` on that one bucket plus the
aggregates it names, each loaded by `_id`. Markers are a cache of where an aggregate is:

- Before a version is committed, the listing it enters gets a marker `<id>@<version>` (a unique
  insert: of two writers of one version placing it in one bucket, both find it there). The state
  records the placement (`placed.<kind>`: bucket and marker version), so the commit itself says
  which marker is current. A state that stays where it was keeps its marker.
- After the commit, the marker of the bucket it left is removed. A crash in between, or a writer that
  lost the commit race, leaves a stale marker: readers load the aggregate and ignore it.
- A reader removes a marker only when it is older than the state it loaded (`v <= version`) and
  is not that state's current marker: a later version that enters the bucket again places a marker
  of its own version, so a reader never removes a marker a newer state relies on, and a marker of a
  version not yet committed (its writer is between the two writes) is left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from shared.mongo import Doc
from shared.store.buckets import Buckets, Period
from shared.store.versioned import VersionedStore

#: the bucket key of a listing that is not split by time (who is refused now, who is in review)
CURRENT = "current"
#: aggregates loaded at once by one read (the connection pool serves the rest of the service meanwhile)
LOADS = 16


@dataclass(frozen=True)
class Place:
    """Which bucket a state is listed in; a new `tag` (a new refusal, a new review) is a new stint."""

    scope: str
    key: str
    tag: str = ""


Where = Callable[[Doc], Place | None]
Load = Callable[[str], Awaitable[Doc | None]]


def marker_id(item_id: str, version: int) -> str:
    return f"{item_id}@{version}"


class Listing:
    """One kind of listing of one versioned aggregate (`where` says where a state belongs)."""

    def __init__(self, db: AsyncDatabase[Doc], kind: str, period: Period, where: Where) -> None:
        self.db = db
        self.kind = kind
        self.period: Period = period
        self.where = where
        self._buckets: Buckets | None = None

    async def buckets(self) -> Buckets:
        if self._buckets is None:  # the layout follows the server, asked once per client
            self._buckets = await Buckets.open(self.db, self.kind, period=self.period)
        return self._buckets

    async def ensure_indexes(self) -> None:
        await (await self.buckets()).ensure_indexes()

    async def place(self, item_id: str, version: int, placed: Doc, state: Doc) -> Doc | None:
        """Before `version` is committed: its marker in the bucket it enters; the placement to store."""
        place = self.where(state)
        before = placed.get(self.kind)
        if place is None:
            return None
        if before is not None and (before["scope"], before["key"], before["tag"]) == (
            place.scope,
            place.key,
            place.tag,
        ):
            return dict(before)
        await (await self.buckets()).add(
            place.scope, place.key, marker_id(item_id, version), {"item": item_id, "v": version}
        )
        return {"scope": place.scope, "key": place.key, "tag": place.tag, "v": version}

    async def list_as_before(self, state: Doc) -> None:
        """A state written before listings existed (no `placed`): its marker at its own version, which
        readers keep while the state is there (its next version places its own)."""
        place = self.where(state)
        if place is not None:
            marker = {"item": state["_id"], "v": state["version"]}
            await (await self.buckets()).add(
                place.scope, place.key, marker_id(state["_id"], state["version"]), marker
            )

    async def leave(self, item_id: str, before: Doc | None, after: Doc | None) -> None:
        """After the commit: the marker of the bucket it left goes (a crash first leaves it stale)."""
        if before is not None and before != after:
            await (await self.buckets()).remove(
                before["scope"], before["key"], marker_id(item_id, before["v"])
            )

    def here(self, state: Doc, scope: str, key: str) -> bool:
        place = self.where(state)
        return place is not None and (place.scope, place.key) == (scope, key)

    async def read(
        self, scope: str, key: str, load: Load, keep: Callable[[Doc], bool] = lambda _d: True
    ) -> list[Doc]:
        """The states listed in one bucket now (each loaded by `_id`, once), in no particular order;
        markers they no longer match are removed. `keep` narrows what belongs (a refusal in force)."""
        buckets = await self.buckets()
        versions: dict[str, list[int]] = {}
        for m in await buckets.read(scope, key):
            versions.setdefault(m["item"], []).append(int(m["v"]))
        gate = asyncio.Semaphore(LOADS)

        async def check(item_id: str, marked: list[int]) -> Doc | None:
            async with gate:
                state = await load(item_id)
            if state is None:  # not committed (yet): its writer is between the writes, or lost
                return None
            here = self.here(state, scope, key) and keep(state)
            current = state.get("placed", {}).get(self.kind, {}).get("v")
            for v in marked:
                if v <= state["version"] and not (here and current in (None, v)):
                    await buckets.remove(scope, key, marker_id(item_id, v))
            return state if here else None

        found = await asyncio.gather(*(check(i, vs) for i, vs in versions.items()))
        return [s for s in found if s is not None]


async def list_existing(
    versions: VersionedStore, listings: list[Listing], also: Callable[[Doc], Awaitable[None]] | None = None
) -> int:
    """List the aggregates written before listings existed (no `placed`; idempotent), each at its
    latest version, and run `also` on each; how many there were. One pass over the heads."""
    listed = 0
    async for head in versions.heads.find({"placed": {"$exists": False}}, {"_id": 1}):
        state = await versions.load(head["_id"])
        if state is None or "placed" in state:
            continue
        for listing in listings:
            await listing.list_as_before(state)
        if also is not None:
            await also(state)
        listed += 1
    return listed


async def placements(listings: list[Listing], item_id: str, version: int, placed: Doc, state: Doc) -> Doc:
    """Every listing's placement of `state` (markers written first): the `placed` to commit."""
    out: dict[str, Any] = {}
    for listing in listings:
        if (p := await listing.place(item_id, version, placed, state)) is not None:
            out[listing.kind] = p
    return out


async def settle(listings: list[Listing], item_id: str, before: Doc, after: Doc) -> None:
    for listing in listings:
        await listing.leave(item_id, before.get(listing.kind), after.get(listing.kind))
