"""consultctl notifier ...: what was sent for a booking, and the emails as a person reads them.

    consultctl notifier deliveries BOOKING_ID          # delivery records: state, attempts, Message-ID
    consultctl notifier mail ADDRESS                   # what Mailpit received for this address
    consultctl notifier sample kushiro-gyosei confirmation   # a template rendered from sample data

They use the notifier's settings (MONGODB_URL, DB_PREFIX, OFFICES_DIR, EXTRA_OFFICES_DIR).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.notifier import preview
from services.notifier.config import Settings
from shared.clock import format_jst
from shared.mongo import connect

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
