"""Ops tasks on the booking database, behind `consultctl` and `python -m services.booking.keys`:
API keys (the development ones, the console's, staff keys held by persons, revoking one by its id),
the HW job-seeker bulk import, a booking's record."""

from __future__ import annotations

import csv
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.booking import views
from services.booking.app import DEV_PORTAL, DEV_STAFF
from services.booking.config import Settings
from services.booking.signing import signing_secret
from services.booking.store import Stores
from services.booking.store.access import OPERATOR, STAFF, Kind, new_key
from shared.clock import SystemClock
from shared.commands import JobseekerRecord
from shared.keyfile import kept_key
from shared.mongo import Doc, connect
from shared.store import outbox
from shared.store.keys import Holder, key_hash

#: the development console's staff key (`make up`): every office, for the person each request names
CONSOLE_SUBJECT, CONSOLE_NAME = "dev-console", "開発用コンソール"


@asynccontextmanager
async def opened(settings: Settings | None = None) -> AsyncIterator[Stores]:
    settings = settings or Settings()
    client = connect(settings.mongodb_url, app_name="consultctl")
    try:
        stores = Stores.open(client[settings.database("booking")], settings.vault())
        await stores.ensure_indexes()
        yield stores
    finally:
        await client.close()


async def ensure_dev_key(path: Path, kind: Kind = "portal", settings: Settings | None = None) -> str:
    """Read the key in `path`, or create it there (mode 600); register its hash. Returns the key."""
    key = kept_key(path, lambda: new_key(kind))
    subject = DEV_PORTAL if kind == "portal" else DEV_STAFF
    async with opened(settings) as stores:
        await stores.credentials.register(key, kind, subject, ["*"], SystemClock().now())
    return key


async def ensure_console_key(path: Path, settings: Settings | None = None) -> str:
    """Development (`make up`): the console's staff key kept in `path` (mode 600), every office, roles
    staff and operator, acting only for the person each request names; made anew when missing or revoked."""
    settings = settings or Settings()
    if settings.environment == "prod":
        raise SystemExit("no development console key in prod: `consultctl staff-key create --console`")
    key = kept_key(path, lambda: new_key("staff"))
    async with opened(settings) as stores:
        known = await stores.credentials.collection.find_one({"_id": key_hash(key)})
        if known is not None and known.get("revoked"):  # a revoked key stays revoked
            key = kept_key(path, lambda: new_key("staff"), renew=True)
        console = Holder(person=CONSOLE_SUBJECT, name=CONSOLE_NAME, roles=[STAFF, OPERATOR], delegates=True)
        await stores.credentials.register(
            key, "staff", CONSOLE_SUBJECT, ["*"], SystemClock().now(), holder=console
        )
    return key


async def create_key(
    kind: Kind,
    subject: str,
    offices: list[str],
    settings: Settings | None = None,
    *,
    person: str | None = None,
    name: str | None = None,
    delegates: bool = False,
    roles: list[str] | None = None,
) -> str:
    """A new key; a staff key is held by `person` (default: derived from `name`, else the staff id),
    or with `delegates` is the console's; it holds `roles` (default: staff; `operator` may replay
    booking's parked messages)."""
    settings = settings or Settings()
    policies = settings.policies()
    unknown = [o for o in offices if o not in policies and o != "*"]
    if unknown or not offices:
        raise ValueError(f"unknown offices {unknown}; known: {policies.ids()}")
    async with opened(settings) as stores:
        holder = (
            Holder(person=person, name=name, roles=roles or (), delegates=delegates)
            if kind == "staff"
            else None
        )
        return await stores.credentials.create(kind, subject, offices, SystemClock().now(), holder)


async def revoke_staff_key(key_id: str, by: str, settings: Settings | None = None) -> Doc | None:
    """Revoke one staff key by its id (`csk-…`; recorded on the key: when, by whom). The key's
    document as it was, or None for no such active staff key."""
    async with opened(settings) as stores:
        return await stores.credentials.revoke_key(key_id, "staff", SystemClock().now(), by)


async def require_signing(portal_id: str, on: bool = True, settings: Settings | None = None) -> int:
    """Flag (or unflag) every key of the portal: its intake requests must be signed. Keys matched."""
    async with opened(settings) as stores:
        return await stores.credentials.require_signing(portal_id, on)


async def revoke_portal(portal_id: str, settings: Settings | None = None) -> int:
    """Revoke every key of the portal (HTTP and the office check of its AMQP commands). Keys matched."""
    async with opened(settings) as stores:
        return await stores.credentials.revoke(portal_id)


async def signing_secret_of(portal_id: str, settings: Settings | None = None) -> str | None:
    """The portal's signing secret (derived from SECRET_KEY), or None for a portal without keys."""
    settings = settings or Settings()
    async with opened(settings) as stores:
        known = await stores.credentials.collection.find_one({"kind": "portal", "subject": portal_id})
    return signing_secret(settings.secret_key, portal_id) if known else None


def read_records(path: Path) -> Iterable[dict[str, Any]]:
    """Job-seeker records from .csv (header row), .json (a list) or .jsonl (one object a line)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    if path.suffix == ".json":
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def import_jobseekers(path: Path, settings: Settings | None = None) -> dict[str, int]:
    """Bulk import into the HW registry, the same validation and ordering as the upstream events."""
    settings = settings or Settings()
    counts = {"applied": 0, "older": 0, "invalid": 0}
    now = SystemClock().now()
    async with opened(settings) as stores:
        for i, raw in enumerate(read_records(path), 1):
            data = {k: v for k, v in raw.items() if v not in ("", None)}
            data.setdefault("active", True)
            try:
                rec = JobseekerRecord.model_validate(
                    {
                        "message_id": str(uuid.uuid4()),
                        "type": "jobseeker.registered",
                        "source": "import",
                        "sent_at": data.pop("as_of", now.isoformat()),
                        **data,
                    }
                )
            except ValidationError as exc:
                counts["invalid"] += 1
                print(f"record {i}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}", file=sys.stderr)
                continue
            if rec.office_id not in settings.policies():
                counts["invalid"] += 1
                print(f"record {i}: unknown office {rec.office_id}", file=sys.stderr)
                continue
            counts["applied" if await stores.jobseekers.upsert(rec) else "older"] += 1
    return counts


async def seal_outboxes(settings: Settings | None = None) -> dict[str, int]:
    """R12: seal the events that versions before sealed outboxes kept in clear (documents rewritten,
    per collection). Versioned changes are never written again; requests only once answered; device
    reports are deleted once sent, so none are left from before but those not yet published."""
    settings = settings or Settings()
    async with opened(settings) as stores:
        vault = stores.bookings.vault
        return {
            "booking_changes": await outbox.seal_kept(stores.bookings.versions.changes, vault),
            "people_changes": await outbox.seal_kept(stores.people.versions.changes, vault),
            "requests": await outbox.seal_kept(
                stores.requests.collection, vault, settled={"state": {"$in": ["done", "refusal"]}}
            ),
        }


async def list_existing(settings: Settings | None = None) -> dict[str, int] | None:
    """Day markers, look-up slots and refusal and review listings of data from before them."""
    async with opened(settings) as stores:
        return await stores.list_existing()


async def show_booking(
    booking_id: str, pii: bool = False, settings: Settings | None = None
) -> dict[str, Any] | None:
    async with opened(settings) as stores:
        booking = await stores.bookings.get(booking_id)
    if booking is None:
        return None
    view = views.staff_view(booking)
    if not pii:
        view.pop("person", None)
    return view
