"""deploy/ferretdb: lookups by `_id` are index searches on the local FerretDB, not table scans.

FerretDB 1.24 queries `_ferretdb_sjson->'$._id'` but indexes `_ferretdb_sjson->"_id"`; SQLite only
uses an index on an expression written the same way, so without the wrapper's extra index every
find, update and delete by `_id` scans the collection. This test runs the wrapper on its own data
directory and asks SQLite for the plan of FerretDB's own lookup statement.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from pathlib import Path

from shared.mongo import connect
from tests import support

BINARY = Path(__file__).resolve().parents[2] / ".local" / "bin" / "ferretdb-local"


def _plan(data: Path, database: str, collection: str) -> str:
    db = sqlite3.connect(data / f"{database}.sqlite")
    try:
        (table,) = db.execute(
            "SELECT table_name FROM _ferretdb_collections WHERE name = ?", (collection,)
        ).fetchone()
        lookup = f"SELECT _ferretdb_sjson FROM \"{table}\" WHERE _ferretdb_sjson->'$._id' = ?"  # FerretDB's
        return " ".join(row[-1] for row in db.execute(f"EXPLAIN QUERY PLAN {lookup}", ('"x"',)))
    finally:
        db.close()


async def test_a_new_collection_gets_an_index_its_id_lookups_use(tmp_path: Path) -> None:
    assert BINARY.exists(), f"{BINARY} is built by `make infra-up` (deploy/local.py)"
    port = support.free_port()
    server = await asyncio.create_subprocess_exec(
        str(BINARY),
        "-listen",
        f"127.0.0.1:{port}",
        "-data",
        str(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = connect(f"mongodb://127.0.0.1:{port}/", app_name="id-index-test")
    try:
        await client["idx"]["timers"].insert_many([{"_id": f"t{i}", "n": i} for i in range(50)])

        async def searched() -> str | None:
            plan = await asyncio.to_thread(_plan, tmp_path, "idx", "timers")
            return plan if "USING INDEX" in plan else None

        plan = await support.eventually(searched, timeout=20, what="an index search for _id lookups")
        assert plan.startswith("SEARCH"), plan
        assert await client["idx"]["timers"].find_one({"_id": "t49"}) == {"_id": "t49", "n": 49}
        indexes = await client["idx"]["timers"].index_information()
        assert list(indexes) == ["_id_"], "FerretDB lists only its own indexes"
    finally:
        await client.close()
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)
