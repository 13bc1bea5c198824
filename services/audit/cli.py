"""consultctl audit: verify the hash chains, create and revoke auditor keys, run the retention job.

consultctl audit create-key --name "監査 花子" --person kansa.hanako --role auditor [--console]
consultctl audit revoke-key ak-0123456789ab
"""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import Annotated

import typer

app = typer.Typer(
    help="The audit store: verify its hash chains, create and revoke auditor keys, purge.",
    no_args_is_help=True,
)


@app.command("verify")
def audit_verify(
    stream: Annotated[str | None, typer.Option(help="only this stream (an office id)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="full report as JSON")] = False,
) -> None:
    """Re-walk the chains; exit 1 and name the first record edited, deleted or reordered."""
    from services.audit.verify import verify_sync

    report = verify_sync(stream=stream)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        for s in report.streams:
            state = "ok" if s.ok else f"BROKEN: {s.problem}"
            typer.echo(f"{s.stream}: {s.checked} records from checkpoint {s.checkpoint_seq}: {state}")
        problem = report.first_problem
        typer.echo(
            "chain verified"
            if problem is None
            else f"first problem: {problem.kind} record at seq "
            f"{problem.seq} of {problem.stream} ({problem.event_id}): {problem.detail}"
        )
    raise typer.Exit(0 if report.ok else 1)


@app.command("create-key")
def audit_create_key(
    name: Annotated[str, typer.Option(help="the holder's display name")],
    role: Annotated[list[str], typer.Option(help="auditor, disclosure-approver and/or operator")],
    person: Annotated[
        str | None,
        typer.Option(help="the person holding the key (a-z, 0-9, . _ @ -); default: derived from --name"),
    ] = None,
    console: Annotated[
        bool, typer.Option("--console", help="the console's key: acts only for the person each request names")
    ] = False,
) -> None:
    """Create an auditor API key held by a person; printed once, stored only as a hash."""
    from services.audit.admin import create_key
    from services.audit.config import Settings

    by = f"cli:{getpass.getuser()}"
    try:
        token = asyncio.run(
            create_key(Settings(), name=name, roles=role, by=by, person=person, console=console)
        )
    except ValueError as exc:
        hint = "--person" if "person" in str(exc) else "--role"
        raise typer.BadParameter(str(exc), param_hint=hint) from exc
    typer.echo(token)


@app.command("revoke-key")
def audit_revoke_key(
    key_id: Annotated[str, typer.Argument(help="the key id, the part of the key before the dot")],
) -> None:
    """Revoke an auditor key: it opens nothing from now on; the revocation is an audit record."""
    from services.audit.admin import revoke_key
    from services.audit.config import Settings

    doc = asyncio.run(revoke_key(Settings(), key_id, by=f"cli:{getpass.getuser()}"))
    if doc is None:
        typer.echo(f"no active audit key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{key_id} revoked (person {doc.get('person') or key_id})")


@app.command("purge")
def audit_purge() -> None:
    """Run the retention job once (the service also runs it periodically)."""
    from services.audit.admin import purge
    from services.audit.config import Settings

    for p in asyncio.run(purge(Settings())):
        typer.echo(
            f"{p.stream}: removed {p.deleted} records up to seq {p.up_to_seq} (before {p.cutoff:%Y-%m-%d})"
        )
