"""consultctl scheduler ...: counsellors and timers, read and written in the scheduler's database.

    consultctl scheduler counsellors load deploy/counsellors.yaml   # upsert (demo seed)
    consultctl scheduler counsellors list [--office demo-town]
    consultctl timers [--status pending|fired|cancelled|all] [--booking ID]
    consultctl scheduler lease                                      # which replica runs the timers
    consultctl scheduler staff-key create --staff kg-desk --office kushiro-gyosei   # printed once
        [--person ID] [--name NAME] [--role staff|counsellor ...] [--counsellor ID] [--console]
    consultctl scheduler staff-key revoke --staff kg-desk        # every key of the staff id
    consultctl scheduler staff-key revoke-key css-1a2b3c4d5e6f   # one key

They use the scheduler's settings (MONGODB_URL, DB_PREFIX, OFFICES_DIR, EXTRA_OFFICES_DIR).
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from services.scheduler import seed
from services.scheduler.config import Settings
from services.scheduler.store import CounsellorStore, LeaseStore, RequestStore, TimerStore, indexes
from services.scheduler.store.staff_keys import PREFIX, STAFF, StaffKeyStore
from shared.clock import SystemClock, format_jst
from shared.mongo import Doc, connect
from shared.store.keys import Holder, key_hash, key_id

T = TypeVar("T")
console = Console()
app = typer.Typer(help="Scheduler: counsellors, availability, timers.", no_args_is_help=True)
counsellors = typer.Typer(help="Counsellors and their weekly availability.", no_args_is_help=True)
app.add_typer(counsellors, name="counsellors")
staff_key = typer.Typer(
    help="Staff API keys, held by persons, for their offices (stored as hashes; shown once).",
    no_args_is_help=True,
)
app.add_typer(staff_key, name="staff-key")


def _with_db(work: Callable[[Any, Settings], Awaitable[T]]) -> T:
    """Run one coroutine against the scheduler's database, then close the client."""
    settings = Settings()

    async def run() -> T:
        client = connect(settings.mongodb_url, app_name="consultctl")
        try:
            return await work(client[settings.database("scheduler")], settings)
        finally:
            await client.close()

    return asyncio.run(run())


@counsellors.command("load")
def load(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Create or update the counsellors of a YAML file (e.g. deploy/counsellors.yaml)."""

    async def work(db: Any, settings: Settings) -> seed.LoadReport:
        store = CounsellorStore(db)
        await indexes.ensure(db)
        counsellors, at = seed.read(path), SystemClock().now()
        return await seed.load(store, settings.policies(), counsellors, at, settings.meeting_dev_hosts)

    report = _with_db(work)
    console.print(f"created {len(report.created)}: {', '.join(report.created) or '-'}")
    console.print(f"updated {len(report.updated)}: {', '.join(report.updated) or '-'}")
    for cid, why in report.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {cid}: {why}")


@counsellors.command("list")
def list_counsellors(office: Annotated[str | None, typer.Option(help="office id")] = None) -> None:
    """Counsellors with their areas, apps and weekly availability."""

    async def work(db: Any, settings: Settings) -> list[Any]:
        store = CounsellorStore(db)
        return await (store.of_office(office, active_only=False) if office else store.all())

    table = Table(title="counsellors")
    for col in ("id", "office", "name", "areas", "apps", "weekly", "exceptions", "active"):
        table.add_column(col)
    for c in _with_db(work):
        weekly = "; ".join(f"{d} {','.join(s)}" for d, s in c.weekly.items())
        exceptions = "; ".join(f"{e.date} {','.join(e.spans) or 'away'}" for e in c.exceptions)
        apps = ",".join(a.value for a in c.apps) or "any"
        table.add_row(
            c.counsellor_id, c.office_id, c.name, ",".join(c.areas), apps, weekly, exceptions, str(c.active)
        )
    console.print(table)


def timers(
    status: Annotated[str, typer.Option(help="pending, fired, cancelled or all")] = "pending",
    booking: Annotated[str | None, typer.Option(help="one booking's timers")] = None,
    office: Annotated[str | None, typer.Option(help="office id")] = None,
) -> None:
    """Durable timers (R06 notices, R08 no-shows, R05 holds): due time, state, lateness."""

    async def work(db: Any, settings: Settings) -> list[Doc]:
        chosen = None if status == "all" else status
        return await TimerStore(db).find(status=chosen, booking_id=booking, office_id=office, limit=1000)

    table = Table(title=f"timers ({status})")
    for col in ("timer", "office", "due (JST)", "status", "fired/cancelled", "late s", "by"):
        table.add_column(col)
    for t in _with_db(work):
        when = t.get("fired_at") or t.get("cancelled_at")
        late = t.get("lateness_seconds")
        table.add_row(
            t["_id"],
            t["office_id"],
            format_jst(t["due_at"]),
            t["status"] + (f" ({t['cancel_reason']})" if t.get("cancel_reason") else ""),
            format_jst(when) if when else "",
            f"{late:.3f}" if late is not None else "",
            t.get("fired_by", ""),
        )
    console.print(table)


@app.command("backfill")
def backfill() -> None:
    """Markers for what was stored before them (idempotent): the timers' due markers and the
    coordination queue's. Start-up does the same on its own (the queue in the background, the
    timers at the first take-over); this runs it ahead, e.g. before an upgrade's first start."""

    async def work(db: Any, settings: Settings) -> tuple[int, int]:
        await indexes.ensure(db)
        now = SystemClock().now()
        timers = len(await TimerStore(db).backfill(now))
        return timers, await RequestStore(db).backfill_queue(now)

    timers, queued = _with_db(work)
    console.print(f"due markers for {timers} pending timers; queue markers for {queued} waiting requests")


@app.command("lease")
def lease() -> None:
    """Which scheduler replica holds the timer lease, and until when."""

    async def work(db: Any, settings: Settings) -> Doc | None:
        return await LeaseStore(db).current()

    doc = _with_db(work)
    if doc is None:
        console.print("no scheduler has taken the timer lease yet")
        return
    console.print(
        f"holder {doc['holder']}, expires {format_jst(doc['expires_at'])}:{doc['expires_at']:%S} JST"
    )


@staff_key.command("create")
def create_staff_key(
    *,
    staff: Annotated[str, typer.Option(help="staff member or desk id, e.g. kg-desk")],
    office: Annotated[list[str], typer.Option(help="the office the key acts for (repeatable)")],
    person: Annotated[
        str | None,
        typer.Option(help="the person holding the key (a-z, 0-9, . _ @ -); default: derived from --name"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="the holder's display name; default: the staff id")] = None,
    role: Annotated[list[str] | None, typer.Option(help="staff (default), counsellor, operator")] = None,
    counsellor: Annotated[str | None, typer.Option(help="role counsellor: the counsellor's id")] = None,
    console: Annotated[
        bool, typer.Option("--console", help="the console's key: acts only for the person each request names")
    ] = False,
) -> None:
    """Create a staff key for offices, held by a person; print it once (its id goes to stderr)."""
    holder = Holder(person=person, name=name or staff, roles=role or [STAFF], delegates=console)

    async def work(db: Any, settings: Settings) -> str:
        if unknown := [o for o in office if o not in settings.policies()]:
            raise ValueError(f"unknown office {', '.join(unknown)}")
        store = StaffKeyStore(db)
        await indexes.ensure(db)
        return await store.create(staff, office, SystemClock().now(), holder, counsellor)

    try:
        key = _with_db(work)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(key)
    typer.echo(f"key id {key_id(PREFIX, key_hash(key))} (for `staff-key revoke-key`)", err=True)


@staff_key.command("revoke")
def revoke_staff_key(staff: Annotated[str, typer.Option(help="staff member or desk id")]) -> None:
    """Revoke every scheduler staff key of this staff member or desk."""

    async def work(db: Any, settings: Settings) -> int:
        return await StaffKeyStore(db).revoke(staff)

    n = _with_db(work)
    if not n:
        typer.echo(f"no scheduler staff keys for {staff}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {n} key{'s' if n != 1 else ''} of {staff}")


@staff_key.command("revoke-key")
def revoke_one_key(key: Annotated[str, typer.Argument(help="the key id, e.g. css-1a2b3c4d5e6f")]) -> None:
    """Revoke one scheduler key: from now on it opens nothing (401); recorded on the key."""
    by = f"cli:{getpass.getuser()}"

    async def work(db: Any, settings: Settings) -> Doc | None:
        return await StaffKeyStore(db).revoke_key(key, SystemClock().now(), by)

    doc = _with_db(work)
    if doc is None:
        typer.echo(f"no active scheduler key {key}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{key} revoked (person {doc.get('person') or key}, staff {doc['subject']})")


app.command("timers")(timers)
#: mounted at the top level by ops/cli.py: `consultctl timers`
TOP_LEVEL = {"timers": timers}
