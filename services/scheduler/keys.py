"""`python -m services.scheduler.keys ensure-dev-key .local/scheduler-staff-key.txt
[--console-file .local/console-scheduler-key.txt]`

What `make up` runs (deploy/processes.py PRESTART): keeps one development staff key of the scheduler
in that file (created on first use, mode 600) and registers its hash for staff `dev-staff` (its own
person), every office; `--console-file` keeps the console's key: every office, roles staff and
counsellor, acting only for the person each request names (`X-Acting-Person`; made anew when
revoked). Uses the scheduler's environment (MONGODB_URL, DB_PREFIX). Real keys act for their office:
`consultctl scheduler staff-key create --staff <id> --office <office>`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.scheduler.app import DEV_STAFF
from services.scheduler.config import Settings
from services.scheduler.store import indexes
from services.scheduler.store.staff_keys import EVERY_OFFICE, ROLES, StaffKeyStore, new_key
from shared.clock import SystemClock
from shared.keyfile import kept_key
from shared.mongo import connect
from shared.store.keys import Holder

#: the development console's key (`make up`)
CONSOLE_SUBJECT, CONSOLE_NAME = "dev-console", "開発用コンソール"


@asynccontextmanager
async def _keys(settings: Settings) -> AsyncIterator[StaffKeyStore]:
    if settings.environment == "prod":
        raise SystemExit("a development key for every office is refused in prod")
    client = connect(settings.mongodb_url, app_name="consultctl")
    try:
        db = client[settings.database("scheduler")]
        await indexes.ensure(db)
        store = StaffKeyStore(db)
        yield store
    finally:
        await client.close()


async def ensure_dev_key(path: Path, settings: Settings | None = None) -> str:
    """Read the key in `path`, or create it there; register its hash (every office). The key."""
    key = kept_key(path, new_key)
    async with _keys(settings or Settings()) as store:
        await store.register(key, DEV_STAFF, [EVERY_OFFICE], SystemClock().now())
    return key


async def ensure_console_key(path: Path, settings: Settings | None = None) -> str:
    """The console's key kept in `path` (every office, roles staff, counsellor and operator, for the person
    each request names), registered; a revoked one is replaced, never revived. The key."""
    key = kept_key(path, new_key)
    async with _keys(settings or Settings()) as store:
        known = await store.stored(key)
        if known is not None and known.get("revoked"):
            key = kept_key(path, new_key, renew=True)
        console = Holder(person=CONSOLE_SUBJECT, name=CONSOLE_NAME, roles=ROLES, delegates=True)
        await store.register(key, CONSOLE_SUBJECT, [EVERY_OFFICE], SystemClock().now(), console)
    return key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.scheduler.keys")
    parser.add_argument("command", choices=["ensure-dev-key"])
    parser.add_argument("path", type=Path, help="the development staff key's file")
    parser.add_argument("--console-file", type=Path)
    args = parser.parse_args(argv)
    asyncio.run(ensure_dev_key(args.path))
    print(f"development scheduler staff key ({DEV_STAFF}, every office): {args.path}")
    if args.console_file:
        asyncio.run(ensure_console_key(args.console_file))
        print(f"development console key (scheduler staff and counsellor, every office): {args.console_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
