"""consultctl: the operators' command line. Each service contributes its own sub-commands.

Service sub-apps live in `services/<service>/cli.py` as a typer `app`, and a dict `TOP_LEVEL` there
adds top-level commands; they are mounted here, so the services' engineers never edit this file. Do
not add service commands here. `ops/` sits above the services: it may import them, they never import it.
"""

from __future__ import annotations

from types import ModuleType

import typer

from ops import broker_cli, notice_samples
from services.audit import cli as audit_cli
from services.booking import cli as booking_cli
from services.console import cli as console_cli
from services.notifier import cli as notifier_cli
from services.scheduler import cli as scheduler_cli

app = typer.Typer(
    name="consultctl",
    help="Operate the consultation booking system: queues, parked messages, bookings, timers, audit.",
    no_args_is_help=True,
)
app.command("queues")(broker_cli.queues)
app.add_typer(broker_cli.dlq, name="dlq")

#: (module, command name) of the services' sub-apps
SERVICE_CLIS: tuple[tuple[ModuleType, str], ...] = (
    (booking_cli, "booking"),
    (scheduler_cli, "scheduler"),
    (audit_cli, "audit"),
    (notifier_cli, "notifier"),
    (console_cli, "console"),
)

# rendered from examples/, which the notifier does not ship (ops/notice_samples.py says why)
notifier_cli.app.command("sample")(notice_samples.sample)

for module, name in SERVICE_CLIS:
    app.add_typer(module.app, name=name)
    for extra_name, extra in getattr(module, "TOP_LEVEL", {}).items():
        if isinstance(extra, typer.Typer):  # a top-level group, e.g. `consultctl portal-key create`
            app.add_typer(extra, name=extra_name)
        else:
            app.command(extra_name)(extra)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
