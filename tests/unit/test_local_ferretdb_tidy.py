"""deploy/local.py sets aside what keeps FerretDB from starting, and nothing else."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from deploy.local import tidy_ferretdb


def _ferretdb_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE _ferretdb_collections (name TEXT)")


def test_orphaned_logs_and_databases_without_ferretdbs_table_are_set_aside_not_deleted(
    tmp_path: Path,
) -> None:
    _ferretdb_db(tmp_path / "kept.sqlite")
    (tmp_path / "dropped.sqlite-wal").write_bytes(b"x")  # its database was dropped while read
    (tmp_path / "dropped.sqlite-shm").write_bytes(b"x")
    sqlite3.connect(tmp_path / "empty.sqlite").close()  # what SQLite makes of an orphaned log
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database at all")

    moved = tidy_ferretdb(tmp_path)

    assert sorted(moved) == ["dropped.sqlite-shm", "dropped.sqlite-wal", "empty.sqlite", "garbage.sqlite"]
    assert sorted(p.name for p in (tmp_path / "set-aside").iterdir()) == sorted(moved)
    assert (tmp_path / "kept.sqlite").exists()
    assert tidy_ferretdb(tmp_path) == []  # a healthy folder is left alone
