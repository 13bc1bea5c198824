"""`python -m services.audit.keys ensure-console-key .local/console-audit-key.txt`

What `make up` runs (deploy/processes.py PRESTART): keeps the development console's audit key in that
file (created on first use or when revoked, mode 600) and registers it in the audit store with the
roles `auditor` and `disclosure-approver`, acting only for the person each request names
(`X-Acting-Person`). Uses the audit service's environment (MONGODB_URL, DB_PREFIX); refused in prod.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.audit.admin import ensure_console_key

USAGE = "usage: python -m services.audit.keys ensure-console-key PATH"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "ensure-console-key":
        print(USAGE, file=sys.stderr)
        return 2
    asyncio.run(ensure_console_key(Path(argv[1])))
    print(f"development console key (audit, auditor and disclosure-approver): {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
