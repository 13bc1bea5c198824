"""Run the services (booking, scheduler, notifier, audit, console) in the background.

    .venv/bin/python deploy/processes.py up|down|status|logs [--only booking,audit] [--timeout 60]

`up` runs the PRESTART hooks, starts every service that is not already running from this
checkout (`python -m services.<name>`, detached, log in .local/logs/<name>.log, pid in
.local/run/<name>.pid) and returns when every /readyz answers 200. `down` stops them with
SIGTERM (they finish in-flight work), SIGKILL after 25 s. The environment passes through
(AMQP_URL, MONGODB_URL, SMTP_URL, EXTRA_OFFICES_DIR, ...); HTTP_PORT is set per service, from the
service's Settings default. The servers themselves are deploy/local.py's job.

RabbitMQ users (R12): when a service's AMQP_URL is the local default (guest on 127.0.0.1, vhost
/), `up` gives each service its own least-privilege user instead: it applies
deploy/rabbitmq_users.py to the local broker (as `make infra-up` does; idempotent; passwords in
.local/secrets/rabbitmq-<service>.password) and sets AMQP_URL=amqp://<service>:<password>@... for
that service. An AMQP_URL of your own (environment or .env) is left alone; BROKER_USERS=guest
keeps guest. If the management API refuses, `up` says so and the services run as guest.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

from deploy.pids import pid_alive  # the repository is on sys.path: the venv installs it

if TYPE_CHECKING:
    from shared.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
RUN, LOGS = LOCAL / "run", LOCAL / "logs"
VENV_PY = ROOT / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
PORTAL_KEY = LOCAL / "portal-key.txt"  # written by the dev-portal-key hook, if there is one
CONSOLE_PASSWORD = LOCAL / "console-dev-password.txt"  # the console's development accounts
NAMES = ("booking", "scheduler", "notifier", "audit", "console")
#: Set in each service's environment: how `down` recognises this checkout's processes even
#: without a pid file, and never touches another checkout's or the e2e tests' processes.
MARK = "CONSULT_SERVICES_ROOT"
STOP_GRACE, KILL_GRACE = 25.0, 5.0
HEADER = "=== deploy/processes.py up "  # starts each run's part of a log

#: Commands `up` runs, in order, before starting any service: each is an argv tuple run from the
#: repository root with the caller's environment. They run on every `up` (also when all services
#: are already running), so they must be idempotent, e.g. create the dev portal key only when it
#: is missing. A failing hook stops `up` before anything starts. Example:
#:     (PY, "-m", "services.booking.keys", "dev-key", "--out", str(PORTAL_KEY)),
PRESTART: tuple[tuple[str, ...], ...] = (
    # the console's keys act only for the person each request names (X-Acting-Person), every office
    (PY, "-m", "services.booking.keys", "ensure-dev-key", str(PORTAL_KEY),
     "--staff-file", str(LOCAL / "staff-key.txt"), "--console-file", str(LOCAL / "console-booking-key.txt")),
    # the scheduler's staff keys live in its own database: its own development key, every office
    (PY, "-m", "services.scheduler.keys", "ensure-dev-key", str(LOCAL / "scheduler-staff-key.txt"),
     "--console-file", str(LOCAL / "console-scheduler-key.txt")),
    # the console's audit key: auditor and disclosure-approver
    (PY, "-m", "services.audit.keys", "ensure-console-key", str(LOCAL / "console-audit-key.txt")),
    # the console's notifier key: operator (the operations page's replay)
    (PY, "-m", "services.notifier.keys", "ensure-console-key", str(LOCAL / "console-notifier-key.txt")),
    # the console's development person accounts (dev.staff, dev.auditor, ...), one password
    (PY, "-m", "services.console.ops", "ensure-dev-accounts", str(CONSOLE_PASSWORD)),
)  # fmt: skip

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never proxy 127.0.0.1


def say(name: str, msg: str) -> None:
    print(f"{name:<9} {msg}", flush=True)


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    host: str  # where to probe it
    amqp_url: str = ""  # the broker URL its Settings resolve to (environment, .env or default)
    broker_url: str = ""  # set by `up`: the service's own RabbitMQ user, replacing guest

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def log(self) -> Path:
        return LOGS / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return RUN / f"{self.name}.pid"


def load(name: str) -> Service:
    """The service's port is its Settings default; the host is what its Settings resolve to."""
    module = importlib.import_module(f"services.{name}.config")
    cls: type[ServiceSettings] = module.Settings
    port = int(cls.model_fields["http_port"].default)
    try:
        settings = cls(http_port=port)
    except ValueError as exc:  # pydantic's ValidationError, e.g. a placeholder secret in prod
        sys.exit(f"{name}: invalid settings: {exc}")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.http_host, settings.http_host)
    return Service(name, port, host, amqp_url=settings.amqp_url)


# --- RabbitMQ: each service as its own user on the local broker ---

SECRETS = LOCAL / "secrets"


def local_guest(url: str) -> bool:
    """The default: guest on the local broker's vhost /, where rabbitmq_users applies its users."""
    u = urlsplit(url)
    return (
        u.scheme == "amqp"
        and u.username == "guest"
        and u.hostname in {"127.0.0.1", "localhost"}
        and (u.port or 5672) == 5672
        and u.path in {"", "/"}
    )


def with_broker_users(services: list[Service]) -> list[Service]:
    """Each service on the local default broker URL gets its own user's URL (see the docstring)."""
    mine = [s for s in services if local_guest(s.amqp_url)]
    if not mine or os.environ.get("BROKER_USERS", "own") == "guest":
        return services
    users = importlib.import_module("deploy.rabbitmq_users")  # repository on sys.path: main() does it

    api = os.environ.get("RABBITMQ_MANAGEMENT_URL", users.DEFAULT_API)
    try:
        passwords = users.local_passwords(SECRETS, users.roles(users.LOCAL_PORTALS))
        users.apply(api, "/", passwords, wait=5.0, portals=users.LOCAL_PORTALS)
    except Exception as exc:  # dev convenience: say why, keep guest (httpx, OSError, refused import)
        say("rabbitmq", f"per-service users not applied ({exc}); services connect as guest")
        return services
    own = {s.name: users.amqp_url(s.amqp_url, s.name, passwords[s.name]) for s in mine}
    return [replace(s, broker_url=own[s.name]) if s.name in own else s for s in services]


# --- processes: ours are the ones whose environment carries MARK=<this checkout> ---


def is_ours(pid: int, name: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    mark = f"{MARK}={ROOT}".encode()
    return f"services.{name}".encode() in argv and mark in environ and pid_alive(pid)


def scan(name: str) -> list[int]:
    """Every live process of this service started from this checkout (normally zero or one)."""
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return sorted(pid for pid in pids if pid != os.getpid() and is_ours(pid, name))


def running(s: Service, *, tidy: bool) -> list[int]:
    """Our live processes of the service; with tidy, the pid file is made to match them."""
    pids = scan(s.name)
    try:
        recorded: int | None = int(s.pidfile.read_text())
    except (OSError, ValueError):
        recorded = None
    if tidy and recorded is not None and recorded not in pids:
        s.pidfile.unlink(missing_ok=True)
        say(s.name, f"stale pid file removed (pid {recorded} is not running)")
    if tidy and pids and recorded not in pids:
        s.pidfile.write_text(f"{pids[0]}\n")
    return pids


def readyz(s: Service, timeout: float = 2.0) -> str | None:
    """None when /readyz answers 200, else why not."""
    try:
        with NO_PROXY.open(f"{s.url}/readyz", timeout=timeout) as resp:
            return None if resp.status == 200 else f"/readyz answered {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"/readyz answered {exc.code} {exc.read(300).decode(errors='replace')}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def port_taken(s: Service) -> bool:
    try:
        socket.create_connection((s.host, s.port), 1).close()
    except OSError:
        return False
    return True


def spawn(s: Service) -> int:
    env = {**os.environ, "HTTP_PORT": str(s.port), "PYTHONUNBUFFERED": "1", MARK: str(ROOT)}
    if s.broker_url:
        env["AMQP_URL"] = s.broker_url
    with s.log.open("ab") as log:
        log.write(f"{HEADER}{time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [PY, "-m", f"services.{s.name}"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    s.pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process and anything it started (a new session, so its group id is its pid)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop(pids: list[int]) -> dict[int, str]:
    """SIGTERM, wait up to STOP_GRACE, then SIGKILL what is left. How each pid ended."""
    t0, how = time.monotonic(), dict[int, str]()
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, KILL_GRACE)):
        if sig == signal.SIGKILL:
            for pid in set(pids) - how.keys():
                signal_group(pid, sig)
        deadline = time.monotonic() + grace
        while set(pids) - how.keys() and time.monotonic() < deadline:
            for pid in set(pids) - how.keys():
                if not pid_alive(pid):
                    how[pid] = f"{sig.name} took {time.monotonic() - t0:.1f}s"
            time.sleep(0.1)
    return how


def tail(path: Path, lines: int = 30) -> list[str]:
    """The last lines this run wrote (the log is appended to, one header line per `up`)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return [str(exc)]
    start = text.rfind(HEADER)
    return text[max(start, 0) :].splitlines()[-lines:]


@contextmanager
def locked() -> Iterator[None]:
    """One up/down at a time per checkout."""
    for d in (RUN, LOGS):
        d.mkdir(parents=True, exist_ok=True)
    with (RUN / "services.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# --- commands ---


def prestart() -> None:
    """Run the PRESTART hooks in order; stop `up` with their output if one fails."""
    for argv in PRESTART:
        say("prestart", " ".join(argv))
        try:
            subprocess.run(argv, cwd=ROOT, check=True, stdin=subprocess.DEVNULL, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            sys.exit(f"prestart hook failed: {exc}")


def up(services: list[Service], timeout: float) -> None:
    prestart()
    t0 = time.monotonic()
    ours = {s.name: pids[0] for s in services if (pids := running(s, tidy=True))}
    to_start = with_broker_users([s for s in services if s.name not in ours])
    if taken := [s for s in to_start if port_taken(s)]:
        for s in taken:
            hint = f"ss -ltnp 'sport = :{s.port}'"
            print(
                f"{s.name}: port {s.port} is in use by a process we did not start ({hint})", file=sys.stderr
            )
        sys.exit(1)
    ours |= {s.name: spawn(s) for s in to_start}
    if failed := wait_ready(services, ours, timeout):
        for s in services:
            if why := failed.get(s.name):
                print(f"{s.name}: not ready: {why}", file=sys.stderr)
                print(f"--- tail of {s.log} ---", *tail(s.log), "---", sep="\n", file=sys.stderr)
        stop([ours[s.name] for s in to_start])  # what this run started; a reused one is left alone
        for s in to_start:
            s.pidfile.unlink(missing_ok=True)
        sys.exit(1)
    took = time.monotonic() - t0
    started = {s.name: s for s in to_start}
    for s in services:
        if s.name in started:
            user = urlsplit(started[s.name].broker_url or s.amqp_url).username
            how = f"started in {took:.1f}s as RabbitMQ user {user}"
        else:
            how = "already running, reused"
        say(s.name, f"pid {ours[s.name]:<7} {s.url} ready; {how} (log {s.log.relative_to(ROOT)})")
    portal_key_note()


def wait_ready(services: list[Service], pids: dict[str, int], timeout: float) -> dict[str, str]:
    """Poll every /readyz until 200; the services not ready by the deadline, with the reason."""
    pending, deadline = list(services), time.monotonic() + timeout
    why: dict[str, str] = {}
    while pending:
        for s in list(pending):
            if not pid_alive(pids[s.name]):
                why[s.name] = f"pid {pids[s.name]} exited"
            elif (why_not := readyz(s)) is not None:
                why[s.name] = why_not
                continue
            else:
                why.pop(s.name, None)
            pending.remove(s)
        if pending and time.monotonic() > deadline:
            break
        if pending:
            time.sleep(0.3)
    return why


def down(services: list[Service]) -> None:
    found = {s.name: running(s, tidy=False) for s in services}
    how = stop([pid for pids in found.values() for pid in pids])
    for s in services:
        s.pidfile.unlink(missing_ok=True)
        for pid in found[s.name]:
            say(s.name, f"pid {pid} stopped ({how.get(pid, 'STILL RUNNING')})")
        if not found[s.name]:
            say(s.name, "not running")
    if left := [pid for s in services for pid in scan(s.name)]:
        sys.exit(f"still running after SIGKILL: {left}")


def status(services: list[Service]) -> bool:
    all_ready = True
    for s in services:
        pids = running(s, tidy=False)
        why = readyz(s)
        all_ready &= why is None
        if why is None:
            state = "ready" if pids else "ready (not started by deploy/processes.py)"
        else:
            stale = " (stale pid file)" if s.pidfile.exists() and not pids else ""
            state = f"NOT READY ({why})" if pids else f"down{stale}"
        pid = str(pids[0]) if pids else "-"
        print(f"{s.name:<9} pid {pid:<8} port {s.port:<5} {state}")
    portal_key_note()
    return all_ready


def portal_key_note() -> None:
    if PORTAL_KEY.exists():
        print(f"dev portal key: {PORTAL_KEY.relative_to(ROOT)}")
    staff = [p for p in (LOCAL / "staff-key.txt", LOCAL / "scheduler-staff-key.txt") if p.exists()]
    if staff:
        print("dev staff keys (booking, scheduler): " + ", ".join(str(p.relative_to(ROOT)) for p in staff))
    consoles = [LOCAL / f"console-{n}-key.txt" for n in ("booking", "scheduler", "audit", "notifier")]
    if consoles := [p for p in consoles if p.exists()]:
        print("dev console keys (X-Acting-Person): " + ", ".join(str(p.relative_to(ROOT)) for p in consoles))
    if CONSOLE_PASSWORD.exists():
        where = CONSOLE_PASSWORD.relative_to(ROOT)
        print(f"console: http://127.0.0.1:8005/signin as dev.staff (dev.auditor, ...), password in {where}")


def logs(services: list[Service], lines: int, follow: bool) -> NoReturn:
    files = [str(s.log) for s in services if s.log.exists()]
    if not files:
        sys.exit("no service logs yet in .local/logs/ (run `deploy/processes.py up`)")
    os.execvp("tail", ["tail", "-n", str(lines), *(["-F"] if follow else []), *files])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "status", "logs"])
    ap.add_argument("--only", default=",".join(NAMES), help="subset of " + ",".join(NAMES))
    ap.add_argument("--timeout", type=float, default=60.0, help="up: seconds to wait for every /readyz")
    ap.add_argument("-n", "--lines", type=int, default=50, help="logs: lines to show")
    ap.add_argument("-f", "--follow", action="store_true", help="logs: keep following")
    a = ap.parse_args()
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    if bad := [n for n in names if n not in NAMES]:
        ap.error(f"unknown service(s) {bad}; choose from {list(NAMES)}")
    os.chdir(ROOT)  # the services read .env from here, as when started by hand
    sys.path.insert(0, str(ROOT))
    if a.command == "down":  # needs no settings: a broken .env must not keep services running
        services = [Service(n, 0, "127.0.0.1") for n in names]
    else:
        services = [load(n) for n in names]
    if a.command == "logs":
        logs(services, a.lines, a.follow)
    if a.command == "status":
        sys.exit(0 if status(services) else 1)
    with locked():
        if a.command == "up":
            up(services, a.timeout)
        else:
            down(services)


if __name__ == "__main__":
    main()
