"""consultctl audit: verify the hash chains, create auditor keys, run the retention job."""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import Annotated

import typer

app = typer.Typer(
    help="The audit store: verify its hash chains, create auditor keys, purge.", no_args_is_help=True
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
    name: Annotated[str, typer.Option(help="who holds the key")],
    role: Annotated[list[str], typer.Option(help="auditor and/or disclosure-approver")],
) -> None:
    """Create an auditor API key; printed once, stored only as a hash."""
    from services.audit.admin import create_key
    from services.audit.config import Settings

    try:
        token = asyncio.run(create_key(Settings(), name=name, roles=role, by=f"cli:{getpass.getuser()}"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--role") from exc
    typer.echo(token)


@app.command("purge")
def audit_purge() -> None:
    """Run the retention job once (the service also runs it periodically)."""
    from services.audit.admin import purge
    from services.audit.config import Settings

    for p in asyncio.run(purge(Settings())):
        typer.echo(
            f"{p.stream}: removed {p.deleted} records up to seq {p.up_to_seq} (before {p.cutoff:%Y-%m-%d})"
        )
