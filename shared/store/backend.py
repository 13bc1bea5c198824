"""Which server answers: MongoDB, or FerretDB 1.x on SQLite (the local and CI server).

The stores ask this where the two differ in what is cheap or safe: FerretDB answers only a
`{_id: value}` filter from an index (any other filter decodes the collection), materialises any
sorted result before its first document, and isolates no update.
"""

from __future__ import annotations

import weakref
from typing import Any

from pymongo import AsyncMongoClient

from shared.mongo import Doc

_FERRETDB: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


async def is_ferretdb(client: AsyncMongoClient[Doc]) -> bool:
    """Whether the server is FerretDB (its buildInfo names its version); asked once per client."""
    known = _FERRETDB.get(client)
    if known is None:
        info = await client.admin.command("buildInfo")
        known = _FERRETDB[client] = "ferretdbVersion" in info
    return known
