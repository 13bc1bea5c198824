"""Conditional writes by `_id`: `update_if`, `find_one_and_update_if`, `delete_if`.

FerretDB 1.x pushes a filter down to SQLite only when it is `{_id: value}` alone. Any other filter,
`{_id: x, rev: 3}` included, decodes the collection's documents from the first one until a match,
a cost that grows with the collection and that no index helps (figures: docs/performance.md,
finding 10), where a write by `_id` alone is an index lookup. So on FerretDB the
helpers below read the document by `_id`, check the condition here, and write by `_id` alone. That
is the read-then-write FerretDB performs inside its own conditional update (it never made one
atomic), a round trip wider; callers already re-read or use unique inserts where a race matters.
On MongoDB they send the conditional command itself, which is atomic.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from shared.mongo import Doc
from shared.store.backend import is_ferretdb

_COMPARE = {"$lt": operator.lt, "$lte": operator.le, "$gt": operator.gt, "$gte": operator.ge}


def matches(doc: Doc, expect: Mapping[str, Any]) -> bool:
    """Whether `doc` meets `expect`: top-level fields, each equal to a value or compared with
    `$lt`/`$lte`/`$gt`/`$gte` (the conditions the stores use). A missing field equals only None."""
    for name, want in expect.items():
        have = doc.get(name)
        if isinstance(want, Mapping) and want and all(k.startswith("$") for k in want):
            for op, bound in want.items():
                if op not in _COMPARE:
                    raise ValueError(f"condition {op} on {name!r} is not supported")
                if have is None or not _COMPARE[op](have, bound):
                    return False
        elif have != want:
            return False
    return True


async def _filter(collection: AsyncCollection[Doc], doc_id: Any, expect: Mapping[str, Any]) -> Doc | None:
    """The filter to send for a write to `doc_id` if it meets `expect`; None: it does not (FerretDB)."""
    if expect and await is_ferretdb(collection.database.client):
        current = await collection.find_one({"_id": doc_id}, dict.fromkeys(expect, 1))
        return {"_id": doc_id} if current is not None and matches(current, expect) else None
    return {"_id": doc_id, **expect}


async def update_if(
    collection: AsyncCollection[Doc], doc_id: Any, expect: Mapping[str, Any], update: Mapping[str, Any]
) -> bool:
    """`update_one({"_id": doc_id, **expect}, update)`; whether it changed the document."""
    query = await _filter(collection, doc_id, expect)
    return query is not None and (await collection.update_one(query, update)).modified_count == 1


async def find_one_and_update_if(
    collection: AsyncCollection[Doc],
    doc_id: Any,
    expect: Mapping[str, Any],
    update: Mapping[str, Any],
    *,
    return_document: bool = ReturnDocument.BEFORE,
) -> Doc | None:
    """`find_one_and_update({"_id": doc_id, **expect}, update)`: the document, or None if unmet."""
    query = await _filter(collection, doc_id, expect)
    if query is None:
        return None
    return await collection.find_one_and_update(query, update, return_document=return_document)


async def delete_if(collection: AsyncCollection[Doc], doc_id: Any, expect: Mapping[str, Any]) -> bool:
    """`delete_one({"_id": doc_id, **expect})`; whether a document went."""
    query = await _filter(collection, doc_id, expect)
    return query is not None and (await collection.delete_one(query)).deleted_count == 1
