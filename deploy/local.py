"""Run the real local servers (RabbitMQ, FerretDB, Mailpit) and the Graph contract server on 127.0.0.1.

    .venv/bin/python deploy/local.py up|down|status [--only rabbitmq,mongo,smtp,graph]
    .venv/bin/python deploy/local.py chromium   # Debian's chromium and a Japanese font, once
    .venv/bin/python deploy/local.py haproxy|promtool  # a Debian binary unpacked into ~/.cache, once

`up` reuses whatever already answers the protocol on a port and never fakes a server.
AMQP_URL, MONGODB_URL or SMTP_URL in the environment replace the local server: only
their readiness is checked. `graph` is deploy/graph_contract.py, the stand-in that answers
Microsoft Graph's documented requests (Microsoft is not reachable here); GRAPH_CONTRACT_URL
names another one. State lives in .local/ (bin, logs, run, data).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import os
import shlex
import shutil
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from deploy.pids import pid_alive  # the repository is on sys.path: the venv installs it

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
BIN, RUN, LOGS = LOCAL / "bin", LOCAL / "run", LOCAL / "logs"
RABBIT_MARK = RUN / "rabbitmq.started"  # present only while `up` owns the RabbitMQ node
RABBIT_LOGS, RABBIT_PIDS = "/var/log/rabbitmq", "/var/lib/rabbitmq/mnesia/rabbit@*.pid"
Probe = Callable[[str, float], "str | None"]  # None when the server answers, else why not


def say(name: str, msg: str) -> None:
    print(f"{name:<9} {msg}", flush=True)


def addr(url: str) -> str:
    u = urlsplit(url)
    return f"{u.hostname}:{u.port}"


# --- readiness, by protocol ---


def probe_amqp(url: str, timeout: float) -> str | None:
    """AMQP 0-9-1: send the protocol header, expect a Connection.Start method frame."""
    u = urlsplit(url)
    tls = u.scheme == "amqps"
    host, port = u.hostname or "127.0.0.1", u.port or (5671 if tls else 5672)
    data = b""
    try:
        with socket.create_connection((host, port), timeout) as raw:
            ctx = ssl.create_default_context()
            sock = ctx.wrap_socket(raw, server_hostname=host) if tls else raw
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            while len(data) < 11 and (chunk := sock.recv(64)):  # frame header + class/method
                data += chunk
    except OSError as exc:
        return str(exc)
    if data[:1] == b"\x01" and data[7:11] == b"\x00\x0a\x00\x0a":
        return None
    return f"no AMQP Connection.Start (got {data[:16]!r})"


def probe_mongo(url: str, timeout: float) -> str | None:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    u, ms = urlsplit(url), int(timeout * 1000)
    if u.scheme == "mongodb" and "," not in u.netloc:  # fail fast on a closed port
        try:
            socket.create_connection((u.hostname or "127.0.0.1", u.port or 27017), timeout).close()
        except OSError as exc:
            return str(exc)
    try:
        with MongoClient[dict[str, object]](
            url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
        ) as client:
            client.admin.command("ping")
    except (PyMongoError, ValueError) as exc:
        return str(exc).split(" (configured timeouts")[0]
    return None


GRAPH_STATE = LOCAL / "graph"
#: development credentials of the local stand-in only (the dev system's GRAPH_CREDENTIALS): the
#: shipped KG file's example tenant, and the demo office's
DEV_GRAPH_APPS = (
    "00000000-0000-0000-0000-000000000000,00000000-0000-0000-0000-000000000000,dev-graph-secret",
    "demo-town,demo-town-scheduler,dev-graph-secret",
)


def probe_graph(url: str, timeout: float) -> str | None:
    """HTTPS with the CA the contract server wrote: its openid configuration answers."""
    import urllib.error
    import urllib.request

    ca = GRAPH_STATE / "ca.pem"
    if not ca.exists():
        return f"no {ca.relative_to(ROOT)} yet"
    ctx = ssl.create_default_context(cafile=str(ca))
    tenant = DEV_GRAPH_APPS[-1].split(",")[0]
    try:
        with urllib.request.urlopen(
            f"{url}/{tenant}/v2.0/.well-known/openid-configuration", timeout=timeout, context=ctx
        ) as r:
            return None if r.status == 200 else f"status {r.status}"
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else f"status {exc.code}"
    except (OSError, ssl.SSLError) as exc:
        return str(exc)


def probe_smtp(url: str, timeout: float) -> str | None:
    u = urlsplit(url)
    smtp_cls = smtplib.SMTP_SSL if u.scheme == "smtps" else smtplib.SMTP
    try:
        smtp = smtp_cls(local_hostname="localhost", timeout=timeout)
        code, banner = smtp.connect(u.hostname or "127.0.0.1", u.port or 25)
        smtp.close()
    except (OSError, smtplib.SMTPException) as exc:
        return str(exc) or type(exc).__name__
    return None if code == 220 else f"banner {code} {banner!r}"


@dataclass
class Server:
    name: str  # the --only key
    env: str  # environment variable whose URL replaces the local server
    url: str  # the local server
    probe: Probe
    binary: str = ""  # Go wrapper deploy/<src>, built into .local/bin/<binary>
    src: str = ""
    pkg: str = "."
    args: tuple[str, ...] = ()
    module: str = ""  # a Python server run as `python -m <module>` (no Go build)


SERVERS: dict[str, Server] = {
    "rabbitmq": Server("rabbitmq", "AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", probe_amqp),
    "mongo": Server(
        "mongo",
        "MONGODB_URL",
        "mongodb://127.0.0.1:27017/",
        probe_mongo,
        "ferretdb-local",
        "ferretdb",
        args=("-listen", "127.0.0.1:27017", "-data", str(LOCAL / "ferretdb")),
    ),
    "smtp": Server(
        "smtp",
        "SMTP_URL",
        "smtp://127.0.0.1:1025",
        probe_smtp,
        "mailpit",
        "mailpit",
        "github.com/axllent/mailpit",
        args=(
            "--smtp",
            "127.0.0.1:1025",
            "--listen",
            "127.0.0.1:8025",
            "--database",
            str(LOCAL / "mailpit" / "mailpit.db"),
            "--smtp-auth-accept-any",
            "--smtp-auth-allow-insecure",
            "--smtp-disable-rdns",
            "--disable-version-check",
            "--max",
            "0",
        ),
    ),
    "graph": Server(
        "graph",
        "GRAPH_CONTRACT_URL",
        "https://127.0.0.1:8443",
        probe_graph,
        module="deploy.graph_contract",
        args=(
            "--port",
            "8443",
            "--state",
            str(GRAPH_STATE),
            *(f"--app={spec}" for spec in DEV_GRAPH_APPS),
        ),
    ),
}


def wait_ready(s: Server, url: str, timeout: float, alive: Callable[[], bool]) -> str | None:
    deadline = time.monotonic() + timeout
    while (err := s.probe(url, 2.0)) is not None and time.monotonic() < deadline:
        if not alive():
            return f"process exited ({err})"
        time.sleep(0.3)
    return err


def fail(s: Server, why: str, logs: list[Path]) -> NoReturn:
    print(f"{s.name}: not ready: {why}", file=sys.stderr)
    for log in logs:
        try:
            text = log.read_text(errors="replace").splitlines()[-25:]
        except OSError as exc:
            text = [str(exc)]
        print(f"--- tail of {log} ---", *text, "---", sep="\n", file=sys.stderr)
    sys.exit(1)


# --- Go binaries, rebuilt only when their wrapper's source changes ---


def ensure_binary(s: Server) -> Path:
    out, src = BIN / s.binary, ROOT / "deploy" / s.src
    h = hashlib.sha256()
    for f in sorted([src / "go.mod", src / "go.sum", *src.glob("*.go")]):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    stamp, want = out.with_name(s.binary + ".srchash"), h.hexdigest()
    if out.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return out
    why = "missing" if not out.exists() else "source changed or never hashed"
    say(s.name, f"building {out.relative_to(ROOT)} from deploy/{s.src} ({why}) ...")
    BIN.mkdir(parents=True, exist_ok=True)
    go, t0 = shutil.which("go") or "/usr/local/go/bin/go", time.monotonic()
    try:
        subprocess.run([go, "build", "-o", str(out), s.pkg], cwd=src, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"{s.name}: go build failed: {exc}")
    stamp.write_text(want + "\n")
    say(s.name, f"built {out.relative_to(ROOT)} in {time.monotonic() - t0:.1f}s")
    return out


# --- processes ---


def our_pid(s: Server) -> int | None:
    """The pid in .local/run/<name>.pid, if that process is still our binary."""
    try:
        pid = int((RUN / f"{s.name}.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    mark = s.module if s.module else str(BIN / s.binary)
    return pid if mark.encode() in cmdline and pid_alive(pid) else None


def rabbit_pid() -> int | None:
    for p in glob.glob(RABBIT_PIDS):
        try:
            if pid_alive(pid := int(Path(p).read_text())):
                return pid
        except (OSError, ValueError):
            pass
    return None


def tool(name: str) -> str | None:
    """Find an executable, also in the sbin dirs that a non-root PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def apt_install(name: str, packages: list[str]) -> None:
    """Install Debian packages with apt-get (root only; otherwise say the command and stop)."""
    if os.geteuid() != 0:
        sys.exit(
            f"{name}: {' '.join(packages)} not installed; as root run: "
            f"apt-get update && apt-get install -y {' '.join(packages)}"
        )
    say(name, f"installing {' '.join(packages)} with apt-get ...")
    t0 = time.monotonic()
    apt_get("update")
    apt_get("install", "-y", *packages)
    say(name, f"installed {' '.join(packages)} in {time.monotonic() - t0:.1f}s")


def apt_get(*args: str, cwd: Path | None = None, capture: bool = False) -> str:
    """Run apt-get non-interactively and return its output (captured only when asked)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=600"]  # another install under way: wait for it, do not fail
    cmd = ["apt-get", *wait, *args]
    done = subprocess.run(cmd, check=True, env=env, cwd=cwd, capture_output=capture, text=True)
    return done.stdout or ""


def start_rabbitmq(s: Server, timeout: float) -> None:
    if not tool("rabbitmq-server"):
        apt_install(s.name, ["rabbitmq-server"])
    t0 = time.monotonic()
    if pid := rabbit_pid():
        say(s.name, f"node pid {pid} is up but AMQP does not answer yet; waiting")
    else:
        plugins = [tool("rabbitmq-plugins") or "rabbitmq-plugins", "--offline", "enable"]
        subprocess.run([*plugins, "rabbitmq_management"], check=True, stdout=subprocess.DEVNULL)
        epmd_before = port_open(4369)
        server = tool("rabbitmq-server") or "rabbitmq-server"
        env = os.environ | {"RABBITMQ_CONF_ENV_FILE": rabbit_env_file()}  # its open-files limit
        subprocess.run([server, "-detached"], check=True, env=env)
        RUN.mkdir(parents=True, exist_ok=True)
        RABBIT_MARK.write_text("epmd=preexisting\n" if epmd_before else "epmd=ours\n")
    if err := wait_ready(s, s.url, timeout, lambda: True):
        logs = sorted(glob.glob(f"{RABBIT_LOGS}/rabbit@*.log"), key=os.path.getmtime)[-1:]
        fail(s, err, [Path(p) for p in logs] + [Path(RABBIT_LOGS) / "startup_err"])
    say(
        s.name,
        f"started {addr(s.url)} pid {rabbit_pid()} in {time.monotonic() - t0:.1f}s "
        f"(logs in {RABBIT_LOGS}, management http://127.0.0.1:15672)",
    )


def rabbit_env_file() -> str:
    """An environment file for Debian's rabbitmq-server that keeps /etc's and raises the node's limit
    of open files to the hard limit.

    Many test vhosts at once (three pytest-xdist workers), each with its message stores and quorum
    queues, need more than 1024 file handles: at that limit RabbitMQ's file handle cache makes every
    caller wait (vhost creation, connections, the management API), so the whole broker stood still in
    a test run. Debian's script starts the node through `su rabbitmq`, whose PAM session resets the
    soft limit to 1024 whatever the caller set; this file is sourced by the node's own shell, after
    `su`. It lives in /tmp so the rabbitmq user can read it from any clone.
    """
    fd, path = tempfile.mkstemp(prefix="consult-rabbitmq-env-", suffix=".conf", dir="/tmp")
    with os.fdopen(fd, "w") as f:
        f.write(
            "[ -r /etc/rabbitmq/rabbitmq-env.conf ] && . /etc/rabbitmq/rabbitmq-env.conf\n"
            'ulimit -n "$(ulimit -Hn)" 2>/dev/null || true\n'
        )
    os.chmod(path, 0o644)
    return path


#: The browser tests' Debian packages, each with a file it installs: Chromium (Playwright drives
#: /usr/bin/chromium; its own browser download cannot work here) and a Japanese font, without which
#: the console's pages and screenshots show empty boxes instead of kana and kanji.
BROWSER_PACKAGES = {
    "chromium": Path("/usr/bin/chromium"),
    "fonts-noto-cjk": Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
}


def ensure_browser() -> None:
    """`chromium`: install what the browser tests need, once; nothing when it is all there."""
    if missing := [pkg for pkg, path in BROWSER_PACKAGES.items() if not path.exists()]:
        apt_install("chromium", missing)
    else:
        say("chromium", f"{BROWSER_PACKAGES['chromium']} and a Japanese font are installed")


# --- Debian binaries unpacked for the deploy checks (never installed, never started) ---


@dataclass(frozen=True)
class Unpacked:
    """A binary taken out of a Debian package (`apt-get download`, `dpkg-deb -x`) into
    ~/.cache/consult-<name>/, outside the repository so that every clone on the machine shares it."""

    name: str  # the command: `deploy/local.py <name>`, the executable ~/.cache/consult-<name>/<name>
    package: str
    binary: str  # its path inside the package
    version: tuple[str, ...]  # the arguments that print its version (the unpacked binary runs)
    libraries: bool = False  # also unpack what apt would install with it, behind an LD_LIBRARY_PATH wrapper

    @property
    def dir(self) -> Path:
        return Path.home() / ".cache" / f"consult-{self.name}"

    @property
    def executable(self) -> Path:
        return self.dir / self.name


#: `haproxy -c` of deploy/cluster/haproxy/haproxy.cfg (tests/unit/test_cluster_manifests.py) needs
#: haproxy and the libraries Debian's package links (liblua5.3-0, libopentracing…); promtool's
#: checks of deploy/observability (tests/unit/test_observability.py) only promtool, which links
#: libc alone, out of Debian's `prometheus` (the server and its web assets are left out).
UNPACKED = {
    "haproxy": Unpacked("haproxy", "haproxy", "usr/sbin/haproxy", ("-v",), libraries=True),
    "promtool": Unpacked("promtool", "prometheus", "usr/bin/promtool", ("--version",)),
}


def unpacked(name: str) -> Path | None:
    """The tool on the PATH, else the one `deploy/local.py <name>` unpacked, else None."""
    if found := tool(name):
        return Path(found)
    return UNPACKED[name].executable if UNPACKED[name].executable.is_file() else None


def apt_knows(package: str) -> bool:
    return subprocess.run(["apt-cache", "show", package], capture_output=True, check=False).returncode == 0


def ensure_unpacked(t: Unpacked) -> Path:
    """Unpack t's binary once; nothing but a file check when it (or an installed one) is there."""
    if found := unpacked(t.name):
        say(t.name, f"{found} is there")
        return found
    t0 = time.monotonic()
    if not apt_knows(t.package):  # a fresh machine: no package lists yet
        if os.geteuid() != 0:
            sys.exit(f"{t.name}: apt does not know {t.package}; as root run: apt-get update")
        apt_get("update")
    packages = [t.package]
    if t.libraries:  # what installing it would add here: its libraries that this machine lacks
        plan = apt_get("install", "--simulate", "--no-install-recommends", t.package, capture=True)
        packages = [line.split()[1] for line in plan.splitlines() if line.startswith("Inst ")]
    say(t.name, f"unpacking {' '.join(packages)} (apt-get download, dpkg-deb -x) into {t.dir} ...")
    t.dir.mkdir(parents=True, exist_ok=True)
    # the download folder is under root's home, where apt's unprivileged _apt user cannot write
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(dir=t.dir) as tmp:
        apt_get(*sandbox, "download", *packages, cwd=Path(tmp))
        tree = Path(tmp) / "root"
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        staged = Path(tmp) / t.name
        if t.libraries:
            shutil.rmtree(t.dir / "root", ignore_errors=True)  # an earlier run cut short
            tree.rename(t.dir / "root")
            libs = sorted({str(so.parent) for so in (t.dir / "root").rglob("*.so*")})
            real = shlex.quote(str(t.dir / "root" / t.binary))
            staged.write_text(f'#!/bin/sh\nLD_LIBRARY_PATH={shlex.quote(":".join(libs))} exec {real} "$@"\n')
        else:
            (tree / t.binary).rename(staged)
        staged.chmod(0o755)
        staged.rename(t.executable)  # last: the executable is there only when all of it is
    version = subprocess.run([str(t.executable), *t.version], capture_output=True, text=True, check=False)
    if version.returncode:
        t.executable.unlink()
        sys.exit(f"{t.name}: the unpacked binary does not run: {version.stderr.strip()}")
    first = (version.stdout or version.stderr).splitlines()[0]
    say(t.name, f"{first} in {t.executable}, {time.monotonic() - t0:.1f}s")
    return t.executable


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True


def command(s: Server) -> list[str]:
    if s.module:
        return [sys.executable, "-m", s.module, *s.args]
    return [str(ensure_binary(s)), *s.args]


def local_database_names(url: str) -> list[str] | None:
    """The databases of the FerretDB this folder runs, by their SQLite files; None if `url` is another server.

    FerretDB 1.24 answers `listDatabases` (even `nameOnly`) by reading the size of every database
    through SQLite's dbstat table, so the call costs a pass over every file, and one such pass
    while other clients were writing heavily ended the server with a SIGBUS in SQLite's WAL code.
    Tests and the bench, which only want the names of what they made, read them here instead.
    """
    server = SERVERS["mongo"]
    if url.rstrip("/") != server.url.rstrip("/") or our_pid(server) is None:
        return None
    return sorted(f.name.removesuffix(".sqlite") for f in (LOCAL / "ferretdb").glob("*.sqlite"))


def tidy_ferretdb(folder: Path) -> list[str]:
    """Set aside what keeps FerretDB from starting; returns what was moved.

    FerretDB 1.24 drops a database by deleting its SQLite file; a connection still reading it can
    leave the `-wal`/`-shm` files behind, and at the next start SQLite makes an empty database from
    the orphaned log, which FerretDB then refuses ("no such table: _ferretdb_collections"). Orphaned
    logs and databases without FerretDB's own table are moved to `<folder>/set-aside/`, never deleted.
    """
    moved: list[str] = []
    aside = folder / "set-aside"

    def set_aside(path: Path) -> None:
        aside.mkdir(exist_ok=True)
        path.replace(aside / path.name)
        moved.append(path.name)

    for log in sorted([*folder.glob("*.sqlite-wal"), *folder.glob("*.sqlite-shm")]):
        if not log.with_name(log.name.rsplit("-", 1)[0]).exists():
            set_aside(log)
    for db in sorted(folder.glob("*.sqlite")):
        try:
            with contextlib.closing(sqlite3.connect(db)) as conn:  # read-write: replays a WAL
                ours = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = '_ferretdb_collections'"
                ).fetchone()
        except sqlite3.DatabaseError:
            ours = None
        if ours is None:
            for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                if path.exists():
                    set_aside(path)
    return moved


def start_binary(s: Server, timeout: float) -> None:
    argv = command(s)
    for d in (RUN, LOGS, LOCAL / "ferretdb", LOCAL / "mailpit"):
        d.mkdir(parents=True, exist_ok=True)
    if s.name == "mongo" and (moved := tidy_ferretdb(LOCAL / "ferretdb")):
        say(s.name, f"set aside {len(moved)} file(s) FerretDB cannot open: .local/ferretdb/set-aside/")
    log = LOGS / f"{s.binary or s.name}.log"
    with log.open("a") as f:
        f.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} deploy/local.py up ===\n")
        f.flush()
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (RUN / f"{s.name}.pid").write_text(f"{proc.pid}\n")
    if err := wait_ready(s, s.url, timeout, lambda: proc.poll() is None):
        stop_pid(s, proc.pid)
        fail(s, err, [log])
    say(
        s.name,
        f"started {addr(s.url)} pid {proc.pid} in {time.monotonic() - t0:.1f}s (log {log.relative_to(ROOT)})",
    )


def stop_pid(s: Server, pid: int) -> None:
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)  # started with start_new_session, so pgid == pid
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not pid_alive(pid):
            break
    (RUN / f"{s.name}.pid").unlink(missing_ok=True)


# --- commands ---


def up(s: Server, timeout: float) -> None:
    if url := os.environ.get(s.env):
        if err := wait_ready(s, url, timeout, lambda: True):
            fail(s, f"{s.env} ({addr(url)}): {err}", [])
        return say(s.name, f"{s.env} is set: {addr(url)} answering")
    if s.probe(s.url, 2.0) is None:
        ours = RABBIT_MARK.exists() if s.name == "rabbitmq" else our_pid(s)
        whose = "started by deploy/local.py" if ours else "not started by us"
        return say(s.name, f"{addr(s.url)} already answering; reusing it ({whose})")
    if s.name == "rabbitmq":
        return start_rabbitmq(s, timeout)
    if pid := our_pid(s):
        say(s.name, f"pid {pid} is ours but does not answer; restarting it")
        stop_pid(s, pid)
    start_binary(s, timeout)


def down(s: Server) -> None:
    if os.environ.get(s.env):
        return say(s.name, f"{s.env} is set; nothing local to stop")
    if s.name == "rabbitmq":
        if not RABBIT_MARK.exists():
            return say(s.name, "not started by deploy/local.py; left alone")
        epmd_ours = "epmd=ours" in RABBIT_MARK.read_text()
        # given the node's pid file, `rabbitmqctl stop` waits until the Erlang VM has exited
        pidfile = glob.glob(RABBIT_PIDS)[:1] if rabbit_pid() else []
        ctl = [tool("rabbitmqctl") or "rabbitmqctl", "stop", "--idempotent", *pidfile]
        subprocess.run(ctl, check=False, stdout=subprocess.DEVNULL)
        if epmd_ours and (epmd := tool("epmd")):  # refused while other Erlang nodes are registered
            subprocess.run([epmd, "-kill"], check=False, stdout=subprocess.DEVNULL)
        RABBIT_MARK.unlink()
        return say(s.name, f"stopped (rabbitmqctl stop{', epmd -kill' if epmd_ours else ''})")
    if pid := our_pid(s):
        stop_pid(s, pid)
        return say(s.name, f"stopped pid {pid}")
    (RUN / f"{s.name}.pid").unlink(missing_ok=True)
    say(s.name, "not running from deploy/local.py; nothing to stop")


def status(s: Server) -> bool:
    url = os.environ.get(s.env) or s.url
    err = s.probe(url, 2.0)
    if os.environ.get(s.env):
        where = f"env {s.env}"
    elif s.name == "rabbitmq" and (pid := rabbit_pid()):
        where = f"{'local' if RABBIT_MARK.exists() else 'reused'} pid {pid}"
    elif s.name != "rabbitmq" and (pid := our_pid(s)):
        where = f"local pid {pid}"
    else:
        where = "reused" if err is None else "-"
    state = "answering" if err is None else f"DOWN ({err})"
    print(f"{s.name:<9} {addr(url):<16} {state:<12} {where}")
    return err is None


def docker(cmd: str, names: list[str], timeout: float) -> bool:
    """Use docker compose when USE_DOCKER=1 and an engine answers; True if it did."""
    if os.environ.get("USE_DOCKER") != "1" or cmd == "status":
        return False
    info = ["docker", "info"]
    engine = shutil.which("docker") and subprocess.run(info, capture_output=True, check=False)
    if not engine or engine.returncode:
        print("USE_DOCKER=1 but no Docker engine answers; using local servers", file=sys.stderr)
        return False
    compose = {"rabbitmq": "rabbitmq", "mongo": "mongo", "smtp": "mailpit"}
    svc = [compose[n] for n in names if n in compose]  # the Graph stand-in always runs locally
    subprocess.run(
        ["docker", "compose", *(["up", "-d"] if cmd == "up" else ["stop"]), *svc], cwd=ROOT, check=True
    )
    for s in (SERVERS[n] for n in names if cmd == "up" and n in compose):
        if err := wait_ready(s, s.url, timeout, lambda: True):
            subprocess.run(["docker", "compose", "logs", "--tail=25", *svc], cwd=ROOT, check=False)
            fail(s, err, [])
        say(s.name, f"{addr(s.url)} answering (docker compose)")
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "status", "build", "chromium", *UNPACKED])
    ap.add_argument("--only", default=",".join(SERVERS), help="subset of rabbitmq,mongo,smtp,graph")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    a = ap.parse_args()
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    if bad := [n for n in names if n not in SERVERS]:
        ap.error(f"unknown server(s) {bad}; choose from {list(SERVERS)}")
    if a.command == "chromium":  # the browser tests' Debian packages (apt's own lock orders installs)
        return ensure_browser()
    if a.command in UNPACKED:  # a binary for the deploy checks, out of its Debian package
        ensure_unpacked(UNPACKED[a.command])
        return
    if a.command == "build":  # binaries only (the chaos drills run private servers from them)
        for n in names:
            if SERVERS[n].binary:
                ensure_binary(SERVERS[n])
        return
    if docker(a.command, names, a.timeout):
        names = [n for n in names if SERVERS[n].module]  # the Graph stand-in runs locally even then
        if not names:
            return
    if a.command == "status":
        answering = [status(SERVERS[n]) for n in names]  # a line for every server
        sys.exit(0 if all(answering) else 1)
    RUN.mkdir(parents=True, exist_ok=True)
    with (RUN / "local.lock").open("w") as lock:  # one up/down at a time (make test runs `up` too)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if a.command == "down":
            for n in reversed(names):
                down(SERVERS[n])
            return
        # A fresh machine: the Go builds (downloads, then compiles) run while apt installs RabbitMQ
        with ThreadPoolExecutor(max_workers=2) as pool:
            builds = {n: pool.submit(ensure_binary, SERVERS[n]) for n in names if _will_start(SERVERS[n])}
            for n in names:
                if n in builds:
                    builds[n].result()  # raises what the build raised
                up(SERVERS[n], a.timeout)


def _will_start(s: Server) -> bool:
    """A server of ours that `up` will start from a binary (no URL given, nothing answering yet)."""
    return bool(s.binary) and not os.environ.get(s.env) and s.probe(s.url, 0.5) is not None


if __name__ == "__main__":
    main()
