"""consultctl commands of the console (mounted by ops/cli.py).

    consultctl console create-account --person tanaka.hanako --name 田中花子 --role staff \
        --office kushiro-gyosei
    consultctl console create-account --person sato --name 佐藤 --role counsellor \
        --office kushiro-gyosei --counsellor kg-sato
    consultctl console accounts
    consultctl console set-password PERSON
    consultctl console totp PERSON          # turn on the second factor; prints the otpauth:// URI once
    consultctl console deactivate PERSON    # signs the person out everywhere

The password is asked for (twice) unless --password-file names a file holding it. They use the
console's environment (MONGODB_URL, DB_PREFIX, SECRET_KEY).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from services.console import ops
from services.console.accounts import AccountError
from services.console.store import AccountExists

app = typer.Typer(help="The console's person accounts (Argon2 hashes; optional TOTP).", no_args_is_help=True)


def _password(path: Path | None) -> str:
    if path is not None:
        return path.read_text().strip()
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True))


@app.command("create-account")
def create_account(  # noqa: PLR0917 (typer passes options by name)
    person: Annotated[str, typer.Option(help="person id, e.g. tanaka.hanako")],
    name: Annotated[str, typer.Option(help="display name, e.g. 田中花子")],
    role: Annotated[
        list[str], typer.Option(help="staff, counsellor, auditor, disclosure-approver, operator")
    ],
    office: Annotated[list[str] | None, typer.Option(help="office (repeatable): staff, counsellor")] = None,
    counsellor: Annotated[str | None, typer.Option(help="the counsellor id (role counsellor)")] = None,
    password_file: Annotated[Path | None, typer.Option(help="read the password from this file")] = None,
) -> None:
    """Create a person account (the first one of an office, too)."""
    try:
        account = asyncio.run(
            ops.create_account(
                person_id=person,
                name=name,
                roles=role,
                offices=office or [],
                password=_password(password_file),
                counsellor_id=counsellor,
            )
        )
    except (AccountError, AccountExists) as exc:
        typer.echo(f"not created: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{account.person_id}: {', '.join(account.roles)} {', '.join(account.offices)}".rstrip())


@app.command("accounts")
def list_accounts() -> None:
    """Every account: id, name, roles, offices, second factor, active."""
    for a in asyncio.run(ops.accounts()):
        flags = ("totp " if a.totp_secret else "") + ("" if a.active else "INACTIVE")
        typer.echo(f"{a.person_id}\t{a.name}\t{','.join(a.roles)}\t{','.join(a.offices)}\t{flags}".rstrip())


@app.command("set-password")
def set_password(
    person: str,
    password_file: Annotated[Path | None, typer.Option(help="read the password from this file")] = None,
) -> None:
    """A new password for the person; their sessions end."""
    try:
        asyncio.run(ops.set_password(person, _password(password_file)))
    except AccountError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{person}: password changed, sessions ended")


@app.command("totp")
def totp(person: str) -> None:
    """Turn on the TOTP second factor; prints the otpauth:// URI for the person's app once."""
    try:
        typer.echo(asyncio.run(ops.enable_totp(person)))
    except AccountError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc


@app.command("deactivate")
def deactivate(person: str) -> None:
    """The person can no longer sign in; their sessions end."""
    try:
        asyncio.run(ops.deactivate(person))
    except AccountError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{person}: deactivated")
