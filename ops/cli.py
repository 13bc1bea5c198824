"""consultctl: the operators' command line. Each service contributes its own sub-commands.

Service sub-apps live in `services/<service>/cli.py` as a typer `app`, and a dict `TOP_LEVEL` there
adds top-level commands; they are mounted here, so the services' engineers never edit this file
(beyond naming a new top-level command in `COMMANDS`, which tests/unit/test_cli.py checks). Do not
add service commands here. `ops/` sits above the services: it may import them, they never import it.

A command imports only the module that serves it (`COMMANDS`): importing all five services' command
lines took seconds on a loaded machine before the first line of work. `consultctl --help` (or a name
that is not known) builds the whole tree.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import typer

#: the service sub-apps, by command name
SERVICE_CLIS: dict[str, str] = {
    "booking": "services.booking.cli",
    "scheduler": "services.scheduler.cli",
    "audit": "services.audit.cli",
    "notifier": "services.notifier.cli",
    "console": "services.console.cli",
}
#: every first word of a command line -> the module that serves it (the sub-apps, the services'
#: TOP_LEVEL commands, and ops' own broker commands)
COMMANDS: dict[str, str] = {
    **SERVICE_CLIS,
    "portal-key": "services.booking.cli",
    "staff-key": "services.booking.cli",
    "jobseekers": "services.booking.cli",
    "timers": "services.scheduler.cli",
    "queues": "ops.broker_cli",
    "dlq": "ops.broker_cli",
}


def build(modules: Sequence[str] | None = None) -> typer.Typer:
    """The command tree, with only `modules` mounted (None: all of them)."""
    wanted = set(COMMANDS.values()) if modules is None else set(modules)
    app = typer.Typer(
        name="consultctl",
        help="Operate the consultation booking system: queues, parked messages, bookings, timers, audit.",
        no_args_is_help=True,
    )
    if "ops.broker_cli" in wanted:
        from ops import broker_cli

        app.command("queues")(broker_cli.queues)
        app.add_typer(broker_cli.dlq, name="dlq")
    for name, path in SERVICE_CLIS.items():
        if path not in wanted:
            continue
        module = importlib.import_module(path)
        if (
            name == "notifier"
        ):  # rendered from examples/, which the notifier does not ship (see ops/notice_samples.py)
            from ops import notice_samples

            module.app.command("sample")(notice_samples.sample)
        app.add_typer(module.app, name=name)
        for extra_name, extra in getattr(module, "TOP_LEVEL", {}).items():
            if isinstance(extra, typer.Typer):  # a top-level group, e.g. `consultctl portal-key create`
                app.add_typer(extra, name=extra_name)
            else:
                app.command(extra_name)(extra)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    first = args[0] if args else None
    module = COMMANDS.get(first) if first else None
    build(None if module is None else [module])(args=args, prog_name="consultctl")


def __getattr__(name: str) -> typer.Typer:
    """`ops.cli.app`: the whole tree (tests drive it with typer's CliRunner)."""
    if name == "app":
        return build()
    raise AttributeError(name)


if __name__ == "__main__":
    main()
