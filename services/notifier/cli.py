"""consultctl notifier ...: what was sent for a booking, and the emails as a person reads them.

    consultctl notifier deliveries BOOKING_ID          # delivery records: state, attempts, Message-ID
    consultctl notifier mail ADDRESS                   # what Mailpit received for this address
    consultctl notifier sample kushiro-gyosei confirmation   # a template rendered from sample data
    consultctl notifier ops-key create --person suzuki.ops --name 鈴木 [--console]   # role operator
    consultctl notifier ops-key revoke-key cnk-1a2b3c4d5e6f

They use the notifier's settings (MONGODB_URL, DB_PREFIX, OFFICES_DIR, EXTRA_OFFICES_DIR).
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from services.notifier import keys, preview
from services.notifier.config import Settings
from shared.clock import SystemClock, format_jst
from shared.mongo import connect
from shared.store.keys import Holder, key_hash, key_id

T = TypeVar("T")

console = Console()
app = typer.Typer(help="Notifier: delivery records and the emails as sent.", no_args_is_help=True)


@app.command()
def deliveries(booking_id: str) -> None:
    """Every notice for a booking: kind, state, attempts, Message-ID, last error."""
    settings = Settings()

    async def read() -> list[dict[str, Any]]:
        client = connect(settings.mongodb_url, app_name="consultctl")
        try:
            coll = client[settings.database("notifier")]["deliveries"]
            return await coll.find({"booking_id": booking_id}, {"outbox": 0}).to_list()
        finally:
            await client.close()

    rows = asyncio.run(read())
    table = Table(title=f"deliveries of booking {booking_id}")
    for col in ("key", "state", "attempts", "created (JST)", "Message-ID", "last error"):
        table.add_column(col)
    for d in rows:
        table.add_row(
            d["_id"],
            d["state"],
            str(d.get("attempts", "")),
            format_jst(d["created_at"]) if d.get("created_at") else "",
            d.get("message_id", ""),
            d.get("last_error") or "",
        )
    console.print(table)
    if not rows:
        raise typer.Exit(1)


@app.command()
def mail(
    address: str,
    api: Annotated[str, typer.Option(help="Mailpit API base")] = preview.MAILPIT_API,
) -> None:
    """Print what Mailpit received for an address, as the person reads it."""
    for msg in asyncio.run(preview.delivered_to(address, api)):
        print(preview.format_message(msg))


ops_key = typer.Typer(help="Operator keys: who may replay the notifier's parked messages (HTTP).")
app.add_typer(ops_key, name="ops-key")


async def _with_keys(settings: Settings, use: Callable[[keys.OpsKeyStore], Awaitable[T]]) -> T:
    client = connect(settings.mongodb_url, app_name="consultctl")
    try:
        return await use(keys.OpsKeyStore(client[settings.database("notifier")]))
    finally:
        await client.close()


@ops_key.command("create")
def create_ops_key(
    person: Annotated[str, typer.Option(help="the person holding the key (a-z, 0-9, . _ @ -)")],
    name: Annotated[str | None, typer.Option(help="the holder's display name")] = None,
    console: Annotated[
        bool, typer.Option("--console", help="the console's key: acts only for the person each request names")
    ] = False,
) -> None:
    """A key with the role operator, held by a person; printed once (its id goes to stderr)."""
    holder = Holder(person=person, name=name, roles=[keys.OPERATOR], delegates=console)
    try:
        key = asyncio.run(_with_keys(Settings(), lambda s: s.create(person, SystemClock().now(), holder)))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--person") from exc
    typer.echo(key)
    typer.echo(f"key id {key_id(keys.PREFIX, key_hash(key))} (for `notifier ops-key revoke-key`)", err=True)


@ops_key.command("revoke-key")
def revoke_ops_key(key: Annotated[str, typer.Argument(help="the key's id, cnk-<12 hex digits>")]) -> None:
    """Revoke one key: from now on it opens nothing."""
    by = f"cli:{getpass.getuser()}"
    done = asyncio.run(_with_keys(Settings(), lambda s: s.revoke_key(key, SystemClock().now(), by)))
    if done is None:
        typer.echo(f"no active notifier key {key}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key} ({done.get('person')})")
