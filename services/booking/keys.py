"""`python -m services.booking.keys ensure-dev-key .local/portal-key.txt [--staff-file .local/staff-key.txt]`

What `make up` runs: keeps one development portal key in that file (created on first use, mode 600) and
registers its hash for the portal `dev-portal`, allowed for every office; `--staff-file` does the same
for a staff key (`dev-staff`). Uses the same environment as the service (MONGODB_URL, DB_PREFIX).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.booking.app import DEV_PORTAL, DEV_STAFF
from services.booking.ops import ensure_dev_key

USAGE = "usage: python -m services.booking.keys ensure-dev-key PATH [--staff-file PATH]"


def main(argv: list[str]) -> int:
    if (
        len(argv) not in (2, 4)
        or argv[0] != "ensure-dev-key"
        or (len(argv) == 4 and argv[2] != "--staff-file")
    ):
        print(USAGE, file=sys.stderr)
        return 2
    asyncio.run(ensure_dev_key(Path(argv[1]), "portal"))
    print(f"development portal key (portal {DEV_PORTAL}, every office): {argv[1]}")
    if len(argv) == 4:
        asyncio.run(ensure_dev_key(Path(argv[3]), "staff"))
        print(f"development staff key ({DEV_STAFF}, every office): {argv[3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
