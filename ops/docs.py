"""`make docs`: the AsyncAPI document of the whole system and each service's OpenAPI document, written
to docs/ (`python -m ops.docs`).

The AsyncAPI document is built by `shared/asyncapi.py` (each service serves its own part of it); the
OpenAPI documents come from the services' apps, built here without starting them.
"""

from __future__ import annotations

import json
from pathlib import Path

from services.audit.app import create_app as audit_app
from services.booking.app import create_app as booking_app
from services.notifier.app import create_app as notifier_app
from services.scheduler.app import create_app as scheduler_app
from shared.asyncapi import asyncapi

DOCS = Path(__file__).resolve().parent.parent / "docs"


def write_all(out: Path) -> list[Path]:
    """Write docs/asyncapi.json and docs/openapi-<service>.json."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "asyncapi.json"]
    document = json.dumps(asyncapi(), ensure_ascii=False, indent=2, sort_keys=True)  # stable order
    written[0].write_text(document + "\n", encoding="utf-8")
    for name, factory in (
        ("booking", booking_app),
        ("scheduler", scheduler_app),
        ("notifier", notifier_app),
        ("audit", audit_app),
    ):
        path = out / f"openapi-{name}.json"
        path.write_text(
            json.dumps(factory().openapi(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_all(DOCS):
        print(f"wrote {p}")
