"""consultctl commands of the booking service (mounted by ops/cli.py).

    consultctl booking show <booking-id> [--pii]
    consultctl booking seal-outboxes                            # R12: once, after upgrading
    consultctl booking list-existing                            # issue 19: start-up does it once
    consultctl portal-key create --portal <id> --office <office-id> [--office ...]
    consultctl portal-key require-signing <portal-id> [--off]   # HMAC-signed intake (issue 8)
    consultctl portal-key signing-secret <portal-id>            # the secret the portal signs with
    consultctl portal-key revoke <portal-id>                    # every key of the portal
    consultctl staff-key create --staff <id> --office <office-id> [--person ID] [--name NAME] [--console]
                                [--role staff --role operator]
    consultctl staff-key revoke-key <key-id>                    # one key, e.g. csk-1a2b3c4d5e6f
    consultctl jobseekers import <file.csv|.json|.jsonl>

They use the service's environment (MONGODB_URL, DB_PREFIX, SECRET_KEY, PII_KEYS).
"""

from __future__ import annotations

import asyncio
import getpass
import json
from pathlib import Path
from typing import Annotated

import typer

from services.booking import ops
from services.booking.store.access import PREFIX
from shared.store.keys import key_hash, key_id

app = typer.Typer(help="Bookings: show one booking's record.", no_args_is_help=True)
portal_key = typer.Typer(help="Portal API keys (stored as hashes; shown once).", no_args_is_help=True)
staff_key = typer.Typer(help="Office staff API keys (stored as hashes; shown once).", no_args_is_help=True)
jobseekers = typer.Typer(help="The HW job-seeker registry (R02, R03).", no_args_is_help=True)


@app.command("show")
def show(
    booking_id: str,
    pii: Annotated[bool, typer.Option("--pii", help="include the person's decrypted details (R12)")] = False,
) -> None:
    """A booking's state, appointment and history as JSON."""
    view = asyncio.run(ops.show_booking(booking_id, pii))
    if view is None:
        typer.echo(f"no booking {booking_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(view, ensure_ascii=False, indent=2, default=str))


@app.command("seal-outboxes")
def seal_outboxes() -> None:
    """R12: seal the outbox events older versions kept in clear (recipients, device values); run once
    after upgrading. Idempotent; nothing is published again."""
    typer.echo(json.dumps(asyncio.run(ops.seal_outboxes())))


@app.command("list-existing")
def list_existing() -> None:
    """List the bookings and people written before the day lists, look-up slots and refusal lists
    existed. The service's start-up does it once per database; run it again after replicas of an
    older version wrote meanwhile. Idempotent."""
    typer.echo(json.dumps(asyncio.run(ops.list_existing())))


@portal_key.command("create")
def create_portal_key(
    portal: Annotated[str, typer.Option(help="portal id, e.g. soumu-portal")],
    office: Annotated[list[str], typer.Option(help="office the portal books for (repeatable)")],
) -> None:
    """Create a key for a portal; print it once."""
    key = asyncio.run(ops.create_key("portal", portal, office))
    typer.echo(key)


@portal_key.command("require-signing")
def require_signing(
    portal: Annotated[str, typer.Argument(help="portal id, as given to `portal-key create --portal`")],
    off: Annotated[bool, typer.Option("--off", help="stop requiring signatures for this portal")] = False,
) -> None:
    """Require (or with --off, stop requiring) HMAC-signed intake requests from every key of a portal.

    The portal then needs its secret (`portal-key signing-secret`); unsigned, wrongly signed, stale
    (over SIGNATURE_WINDOW_SECONDS) or replayed requests are answered 401.
    """
    keys = asyncio.run(ops.require_signing(portal, not off))
    if not keys:
        typer.echo(f"no portal keys for {portal}", err=True)
        raise typer.Exit(1)
    state = "no longer required" if off else "required"
    typer.echo(f"{portal}: signed intake requests {state} ({keys} key{'s' if keys != 1 else ''})")


@portal_key.command("revoke")
def revoke_portal(
    portal: Annotated[str, typer.Argument(help="portal id, as given to `portal-key create --portal`")],
) -> None:
    """Revoke every key of a portal: its HTTP requests get 401 and its AMQP commands are parked
    (`portal-not-authorised`). Its broker user goes with `python -m deploy.rabbitmq_users portal revoke`."""
    keys = asyncio.run(ops.revoke_portal(portal))
    if not keys:
        typer.echo(f"no portal keys for {portal}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{portal}: {keys} key{'s' if keys != 1 else ''} revoked")


@portal_key.command("signing-secret")
def show_signing_secret(
    portal: Annotated[str, typer.Argument(help="portal id")],
) -> None:
    """Print the portal's HMAC signing secret (derived from SECRET_KEY; hand it over securely)."""
    secret = asyncio.run(ops.signing_secret_of(portal))
    if secret is None:
        typer.echo(f"no portal keys for {portal}", err=True)
        raise typer.Exit(1)
    typer.echo(secret)


@staff_key.command("create")
def create_staff_key(  # noqa: PLR0917 (typer passes options by name)
    staff: Annotated[str, typer.Option(help="staff member or desk id")],
    office: Annotated[list[str], typer.Option(help="the office (repeatable)")],
    person: Annotated[
        str | None,
        typer.Option(help="the person holding the key (a-z, 0-9, . _ @ -); default: derived from --name"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="the holder's display name; default: the staff id")] = None,
    console: Annotated[
        bool, typer.Option("--console", help="the console's key: acts only for the person each request names")
    ] = False,
    role: Annotated[
        list[str] | None, typer.Option(help="staff (default) and/or operator (replays parked messages)")
    ] = None,
) -> None:
    """Create a key for office staff, held by a person; print it once (its id goes to stderr)."""
    try:
        key = asyncio.run(
            ops.create_key(
                "staff", staff, office, person=person, name=name or staff, delegates=console, roles=role
            )
        )
    except ValueError as exc:
        raise typer.BadParameter(
            str(exc), param_hint="--person" if "person" in str(exc) else "--office"
        ) from exc
    typer.echo(key)
    typer.echo(f"key id {key_id(PREFIX['staff'], key_hash(key))} (for `staff-key revoke-key`)", err=True)


@staff_key.command("revoke-key")
def revoke_staff_key(key: Annotated[str, typer.Argument(help="the key id, e.g. csk-1a2b3c4d5e6f")]) -> None:
    """Revoke one staff key: from now on it opens nothing (401); recorded on the key."""
    doc = asyncio.run(ops.revoke_staff_key(key, f"cli:{getpass.getuser()}"))
    if doc is None:
        typer.echo(f"no active staff key {key}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{key} revoked (person {doc.get('person') or key}, staff {doc['subject']})")


@jobseekers.command("import")
def import_jobseekers(path: Path) -> None:
    """Bulk import: office_id, jobseeker_number, name, phone, mypage_email (empty: no My Page), as_of."""
    counts = asyncio.run(ops.import_jobseekers(path))
    typer.echo(json.dumps(counts))
    if counts["invalid"]:
        raise typer.Exit(1)


TOP_LEVEL = {"portal-key": portal_key, "staff-key": staff_key, "jobseekers": jobseekers}
