"""`python -m services.booking.keys ensure-dev-key .local/portal-key.txt [--staff-file .local/staff-key.txt]
[--console-file .local/console-booking-key.txt]`

What `make up` runs: keeps one development portal key in that file (created on first use, mode 600) and
registers its hash for the portal `dev-portal`, allowed for every office; `--staff-file` does the same
for a staff key (`dev-staff`, its own person); `--console-file` for the console's staff key (every
office, role staff, acting only for the person each request names in `X-Acting-Person`; made anew
when revoked). Uses the same environment as the service (MONGODB_URL, DB_PREFIX).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from services.booking.app import DEV_PORTAL, DEV_STAFF
from services.booking.ops import ensure_console_key, ensure_dev_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.booking.keys")
    parser.add_argument("command", choices=["ensure-dev-key"])
    parser.add_argument("path", type=Path, help="the portal key's file")
    parser.add_argument("--staff-file", type=Path)
    parser.add_argument("--console-file", type=Path)
    args = parser.parse_args(argv)
    asyncio.run(ensure_dev_key(args.path, "portal"))
    print(f"development portal key (portal {DEV_PORTAL}, every office): {args.path}")
    if args.staff_file:
        asyncio.run(ensure_dev_key(args.staff_file, "staff"))
        print(f"development staff key ({DEV_STAFF}, every office): {args.staff_file}")
    if args.console_file:
        asyncio.run(ensure_console_key(args.console_file))
        print(f"development console key (booking staff, every office): {args.console_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
