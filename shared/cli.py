"""consultctl: the operators' command line. Each service contributes its own sub-commands.

Service sub-apps live in `services/<service>/cli.py` as a typer `app`; they are added here when
present, so the services' engineers never edit the same file. Do not add service commands here.
"""

from __future__ import annotations

import importlib

import typer

from shared.ops import broker_cli

app = typer.Typer(
    name="consultctl",
    help="Operate the consultation booking system: queues, parked messages, bookings, timers, audit.",
    no_args_is_help=True,
)
app.command("queues")(broker_cli.queues)
app.add_typer(broker_cli.dlq, name="dlq")

#: (module, command name) of the services' sub-apps
SERVICE_CLIS = (
    ("services.booking.cli", "booking"),
    ("services.scheduler.cli", "scheduler"),
    ("services.audit.cli", "audit"),
    ("services.notifier.cli", "notifier"),
)

for module_name, name in SERVICE_CLIS:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        continue
    sub = getattr(module, "app", None)
    if isinstance(sub, typer.Typer):
        app.add_typer(sub, name=name)
    for extra_name, extra in getattr(module, "TOP_LEVEL", {}).items():
        if isinstance(extra, typer.Typer):  # a top-level group, e.g. `consultctl portal-key create`
            app.add_typer(extra, name=extra_name)
        else:
            app.command(extra_name)(extra)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
