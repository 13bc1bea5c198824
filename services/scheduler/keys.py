"""`python -m services.scheduler.keys ensure-dev-key .local/scheduler-staff-key.txt`

What `make up` runs (deploy/processes.py PRESTART): keeps one development staff key of the scheduler
in that file (created on first use, mode 600) and registers its hash for staff `dev-staff`, every
office. Uses the scheduler's environment (MONGODB_URL, DB_PREFIX). Real keys act for one office:
`consultctl scheduler staff-key create --staff <id> --office <office>`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.scheduler.app import DEV_STAFF
from services.scheduler.config import Settings
from services.scheduler.store.staff_keys import EVERY_OFFICE, StaffKeyStore, new_key
from shared.clock import SystemClock
from shared.mongo import connect

USAGE = "usage: python -m services.scheduler.keys ensure-dev-key PATH"


def key_file(path: Path) -> str:
    """The key kept in `path`, created there (mode 600) on first use."""
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    key = new_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


async def ensure_dev_key(path: Path, settings: Settings | None = None) -> str:
    """Read the key in `path`, or create it there; register its hash (every office). The key."""
    settings = settings or Settings()
    if settings.environment == "prod":
        raise SystemExit("a development key for every office is refused in prod")
    key = key_file(path)
    client = connect(settings.mongodb_url, app_name="consultctl")
    try:
        store = StaffKeyStore(client[settings.database("scheduler")])
        await store.ensure_indexes()
        await store.register(key, DEV_STAFF, [EVERY_OFFICE], SystemClock().now())
    finally:
        await client.close()
    return key


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "ensure-dev-key":
        print(USAGE, file=sys.stderr)
        return 2
    asyncio.run(ensure_dev_key(Path(argv[1])))
    print(f"development scheduler staff key ({DEV_STAFF}, every office): {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
