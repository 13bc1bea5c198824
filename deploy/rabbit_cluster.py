"""A 3-node RabbitMQ cluster on loopback from Debian's rabbitmq-server, with HAProxy in front (issue 20).

    .venv/bin/python -m deploy.rabbit_cluster up       # `make cluster-up`: start what is not running
    .venv/bin/python -m deploy.rabbit_cluster status   # each node and HAProxy, and the services' URLs
    .venv/bin/python -m deploy.rabbit_cluster down     # `make cluster-down`: stop what `up` started

Every node is a private Erlang VM of its own: its own node name (`consult-<n>@localhost`), AMQP,
management and Erlang distribution ports, data and log folders under `.local/cluster/`, and the one
Erlang cookie of this cluster (`.local/cluster/home/.erlang.cookie`, 0400; the nodes run with that
folder as HOME, so they never read the machine's own cookie). Node 1 starts first; nodes 2 and 3 find
it by peer discovery from the configuration (`classic_config`, as deploy/cluster/rabbitmq/cluster.conf)
and join it on their first boot; a node restarted on its data rejoins by itself. Every queue of
shared/topology.py is a quorum queue declared without a group size, so the broker's default decides:
`quorum_cluster_size` 3 (advanced.config), leaders spread by `queue_leader_locator = balanced`. The
topology and the least-privilege users are deploy/rabbitmq_users.py's, applied once all three nodes
run (passwords in `.local/cluster/secrets/`, 0600).

HAProxy (Debian's, unpacked by `make haproxy-binary`) listens on one AMQP port in front of the three
nodes, health-checked by the AMQP protocol header, so every client reaches the whole cluster through
one URL (deploy/README.md says why this and not a list of URLs). The scale drills (tests/scale) run
the same `Cluster` on free ports in a temporary folder, with HTTP backends for the services' replicas.

Fixed ports of `make cluster-up` (CLUSTER_PORT_BASE moves them all; default 26700, below the kernel's
ephemeral range, clear of the shared servers' 5672/15672/25672, 27017, 1025/8025 and 8443):

    base+0  HAProxy AMQP (what the services use)   base+9   HAProxy /healthz
    base+N  node N's AMQP (N = 1..3)                base+10+N node N's management API (guest/guest)
    base+20+N node N's Erlang distribution port    (epmd: the machine's, 4369, shared by name only)
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from deploy import local, rabbitmq_users
from deploy.pids import pid_alive

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".local" / "cluster"
PORT_BASE = int(os.environ.get("CLUSTER_PORT_BASE", "26700"))
VHOST = "/"
#: the node script itself (/usr/sbin/rabbitmq-server would switch to the rabbitmq user)
RABBITMQ_SERVER = next(
    iter(sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"))), "rabbitmq-server"
)
#: the AMQP 0-9-1 protocol header; a node that accepts clients answers with Connection.Start
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def wait_for(probe: Callable[[], object], *, timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll until `probe` returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if last := probe():
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last={last!r}")


def amqp_answers(port: int, timeout: float = 3.0) -> bool:
    """Whether a node (or HAProxy in front of one) answers the AMQP header with Connection.Start."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as s:
            s.sendall(AMQP_HEADER)
            s.settimeout(timeout)
            return s.recv(8)[:3] == b"\x01\x00\x00"
    except OSError:
        return False


@dataclass
class Node:
    """A RabbitMQ node of our own (ports, node name, data dir), so that it can really be kill -9'd.

    `cluster` names every node of its cluster (peer discovery on first boot); empty: a single node.
    `home` holds the Erlang cookie the node reads (HOME); None: the caller's own HOME."""

    name: str  # the Erlang node name, e.g. consult-1@localhost
    dir: Path
    amqp_port: int
    api_port: int
    dist_port: int
    log: Path
    cluster: tuple[str, ...] = ()
    home: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.api_port}/api"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    def pid(self) -> int | None:
        """The Erlang VM's pid (its pid file), if it runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def configure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        conf = [
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
            f"management.tcp.port = {self.api_port}",
            "management.tcp.ip = 127.0.0.1",
        ]
        if self.cluster:
            conf += [
                "cluster_formation.peer_discovery_backend = classic_config",
                *(f"cluster_formation.classic_config.nodes.{i} = {n}" for i, n in enumerate(self.cluster, 1)),
                # a node cut off from the other two pauses instead of serving a minority's view
                "cluster_partition_handling = pause_minority",
                "queue_leader_locator = balanced",
                # the drills' failovers are noticed within seconds: the default is 60 s
                "heartbeat = 10",
            ]
        (self.dir / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        # the default member count of a quorum queue declared without x-quorum-initial-group-size
        (self.dir / "advanced.config").write_text("[{rabbit, [{quorum_cluster_size, 3}]}].\n")

    def start(self) -> None:
        """Start the node in the background (it outlives this process: its own session)."""
        self.configure()
        env = os.environ | {
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
        }
        if self.home is not None:
            env["HOME"] = str(self.home)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [RABBITMQ_SERVER], env=env, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        """kill -9 the Erlang VM, then reap the launcher script."""
        if pid := self.pid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        self._reap()

    def stop(self, timeout: float = 120.0) -> None:
        """Stop gracefully (SIGTERM: the node closes its clients' connections, hands its quorum
        queues' leadership over and leaves its data consistent); kill -9 if it has not after `timeout`."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                wait_for(lambda: not pid_alive(pid), timeout=timeout, what=f"node {self.name} to stop")
            except TimeoutError:
                self.kill()
                return
        self.pid_file.unlink(missing_ok=True)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def answers(self) -> bool:
        """AMQP accepted and the management API answers (a node that has finished booting)."""
        if not amqp_answers(self.amqp_port):
            return False
        try:
            return httpx.get(f"{self.api}/overview", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def running_nodes(self) -> set[str]:
        """The cluster's nodes this node sees running (the management API's /nodes)."""
        try:
            r = httpx.get(f"{self.api}/nodes", params={"columns": "name,running"}, timeout=5)
            return {n["name"] for n in r.json() if n.get("running")} if r.status_code == 200 else set()
        except (httpx.HTTPError, ValueError):
            return set()


def haproxy_config(
    nodes: Iterable[Node], amqp_port: int, monitor_port: int, http: Mapping[str, tuple[int, list[int]]]
) -> str:
    """HAProxy on loopback: AMQP in front of the nodes; HTTP in front of each service's replicas
    (`http`: service -> (its port on HAProxy, its replicas' ports)), health-checked on /readyz."""
    lines = [
        "global", "    maxconn 4096", "",
        "defaults",
        "    timeout connect 3s", "    timeout client 30s", "    timeout server 30s",
        "    default-server inter 1s fall 2 rise 2", "",
        "frontend monitor", "    mode http", f"    bind 127.0.0.1:{monitor_port}",
        "    monitor-uri /healthz", "",
        "frontend amqp", "    mode tcp", f"    bind 127.0.0.1:{amqp_port}", "    option clitcpka",
        "    timeout client 3h", "    default_backend rabbitmq", "",
        "backend rabbitmq", "    mode tcp", "    balance leastconn", "    option srvtcpka",
        "    timeout server 3h",
        # a connection refused by a dead node is tried again on another one
        "    retries 3", "    option redispatch",
        "    option tcp-check", "    tcp-check connect",
        f"    tcp-check send-binary {AMQP_HEADER.hex()}", "    tcp-check expect binary 010000",
        # a node marked down takes its clients' connections with it: they reconnect to a live one
        "    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions",
        *(f"    server {n.name.split('@')[0]} 127.0.0.1:{n.amqp_port} check" for n in nodes), "",
    ]  # fmt: skip
    for service, (port, replicas) in http.items():
        lines += [
            f"frontend {service}", "    mode http", f"    bind 127.0.0.1:{port}",
            "    timeout http-request 10s", f"    default_backend {service}", "",
            f"backend {service}", "    mode http", "    balance roundrobin",
            "    option httpchk", "    http-check send meth GET uri /readyz",
            "    http-check expect status 200",
            # a request that never reached a replica goes to the other; one that did is not resent
            "    retries 2", "    retry-on conn-failure", "    option redispatch",
            *(f"    server {service}-{i} 127.0.0.1:{p} check" for i, p in enumerate(replicas, 1)), "",
        ]  # fmt: skip
    return "\n".join(lines)


@dataclass
class HAProxy:
    config: Path
    monitor_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.config.with_suffix(".pid")

    def start(self, text: str) -> None:
        binary = local.unpacked("haproxy")
        if binary is None:
            raise SystemExit("haproxy: not found; `make haproxy-binary` unpacks Debian's into ~/.cache")
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)
        check = subprocess.run(
            [binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True, check=False
        )
        if check.returncode:
            raise SystemExit(f"haproxy refuses {self.config}: {check.stderr.strip()}")
        self.proc = subprocess.Popen(
            [str(binary), "-db", "-f", str(self.config)], stdin=subprocess.DEVNULL,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.pid_file.write_text(f"{self.proc.pid}\n")
        wait_for(self.answers, timeout=30, what=f"HAProxy on {self.monitor_port}")

    def answers(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        pid = self.proc.pid if self.proc is not None else _read_pid(self.pid_file)
        if pid is not None and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                wait_for(lambda: not pid_alive(pid), timeout=15, what="HAProxy to stop")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            self.proc = None
        self.pid_file.unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class Ports:
    haproxy_amqp: int
    haproxy_monitor: int
    amqp: tuple[int, int, int]
    api: tuple[int, int, int]
    dist: tuple[int, int, int]

    @classmethod
    def fixed(cls, base: int = PORT_BASE) -> Ports:
        n = (1, 2, 3)
        return cls(
            base, base + 9, tuple(base + i for i in n), tuple(base + 10 + i for i in n),  # type: ignore[arg-type]
            tuple(base + 20 + i for i in n),  # type: ignore[arg-type]
        )  # fmt: skip

    @classmethod
    def free(cls, pick: Callable[[], int]) -> Ports:
        def three() -> tuple[int, int, int]:
            return (pick(), pick(), pick())

        return cls(pick(), pick(), three(), three(), three())


@dataclass
class Cluster:
    """Three nodes, one cookie, the topology and users in `vhost`, HAProxy in front."""

    dir: Path
    ports: Ports
    tag: str = "consult"  # node names <tag>-1..3@localhost
    vhost: str = VHOST
    http: dict[str, tuple[int, list[int]]] = field(default_factory=dict)
    logs: Path | None = None  # the nodes' and HAProxy's output; default <dir>/logs
    nodes: list[Node] = field(default_factory=list)
    haproxy: HAProxy | None = None

    def __post_init__(self) -> None:
        logs = self.logs or self.dir / "logs"
        names = tuple(f"{self.tag}-{i}@localhost" for i in (1, 2, 3))
        self.nodes = [
            Node(name, self.dir / f"node-{i}", self.ports.amqp[i - 1], self.ports.api[i - 1],
                 self.ports.dist[i - 1], logs / f"node-{i}.log", cluster=names,
                 home=self.dir / "home")
            for i, name in enumerate(names, 1)
        ]  # fmt: skip
        self.haproxy = HAProxy(self.dir / "haproxy.cfg", self.ports.haproxy_monitor, logs / "haproxy.log")

    @property
    def api(self) -> str:
        return self.nodes[0].api

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def cookie(self) -> None:
        """One Erlang cookie for the three nodes (and for rabbitmqctl run with HOME=<dir>/home)."""
        home = self.dir / "home"
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = home / ".erlang.cookie"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(20))

    def running(self, node: Node) -> bool:
        """The node answers and sees all three nodes running (the cluster is whole again)."""
        return node.answers() and len(node.running_nodes()) == len(self.nodes)

    def wait_whole(self, timeout: float = 180.0) -> None:
        for node in self.nodes:
            wait_for(partial(self.running, node), timeout=timeout, what=f"{node.name} in a cluster of 3")

    def start_nodes(self, timeout: float = 180.0) -> None:
        """Node 1 first (it forms the cluster), then 2 and 3 at once (they join it)."""
        self.cookie()
        first, *rest = self.nodes
        if first.pid() is None:
            first.start()
        wait_for(first.answers, timeout=timeout, what=f"{first.name} to boot")
        for node in rest:
            if node.pid() is None:
                node.start()
        self.wait_whole(timeout)

    def passwords(self) -> dict[str, str]:
        return rabbitmq_users.local_passwords(self.dir / "secrets", rabbitmq_users.roles())

    def apply_users(self) -> dict[str, str]:
        """The vhost, the whole topology and every least-privilege user (deploy/rabbitmq_users.py)."""
        pw = self.passwords()
        rabbitmq_users.apply(self.api, self.vhost, pw, wait=60)
        return pw

    def url(self, role: str, passwords: Mapping[str, str]) -> str:
        """A role's AMQP URL through HAProxy."""
        base = f"amqp://127.0.0.1:{self.ports.haproxy_amqp}/"
        return rabbitmq_users.amqp_url(base, role, passwords[role], self.vhost)

    def start_haproxy(self) -> None:
        assert self.haproxy is not None
        if not self.haproxy.answers():
            text = haproxy_config(self.nodes, self.ports.haproxy_amqp, self.ports.haproxy_monitor, self.http)
            self.haproxy.start(text)

    def up(self, timeout: float = 180.0) -> dict[str, str]:
        self.start_nodes(timeout)
        pw = self.apply_users()
        self.start_haproxy()
        wait_for(lambda: amqp_answers(self.ports.haproxy_amqp), timeout=30, what="AMQP through HAProxy")
        return pw

    def down(self, *, graceful: bool = True) -> None:
        """Stop HAProxy and the nodes: gracefully (the last node stopped is node 1, which `up` starts
        first, so the next `up` finds consistent data), or kill -9 (a throw-away cluster's data)."""
        if self.haproxy is not None:
            self.haproxy.stop()
        for node in reversed(self.nodes):
            node.stop() if graceful else node.kill()

    def live_api(self) -> str:
        """The management API of a node that answers (any node serves the whole cluster's view)."""
        node = next((n for n in self.nodes if n.pid() is not None and n.answers()), None)
        if node is None:
            raise RuntimeError("no node of the cluster answers")
        return node.api

    def quorum_critical(self, node: Node) -> bool:
        """Whether stopping `node` would leave a quorum queue without a majority (it is behind or
        another member is down): a rolling restart waits until it is not."""
        try:
            r = httpx.get(f"{node.api}/health/checks/node-is-quorum-critical", timeout=10)
        except httpx.HTTPError:
            return True
        return r.status_code != 200

    def queues(self) -> list[dict[str, Any]]:
        """The vhost's queues with their leader and members (quorum queues)."""
        r = httpx.get(
            f"{self.live_api()}/queues/{quote(self.vhost, safe='')}",
            params={"columns": "name,type,leader,members,online,messages,messages_unacknowledged"},
            timeout=30,
        )
        r.raise_for_status()
        return list(r.json())


def local_cluster() -> Cluster:
    """`make cluster-up`'s cluster: fixed ports (CLUSTER_PORT_BASE), data in .local/cluster/."""
    return Cluster(HOME, Ports.fixed())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deploy.rabbit_cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("command", choices=("up", "down", "status"))
    a = ap.parse_args(argv)
    cluster = local_cluster()
    if a.command == "up":
        t0 = time.monotonic()
        pw = cluster.up()
        for n in cluster.nodes:
            print(
                f"rabbitmq  {n.name} pid {n.pid()} amqp :{n.amqp_port} management http://127.0.0.1:{n.api_port}"
            )
        quorum = [q for q in cluster.queues() if q.get("type") == "quorum"]
        three = sum(len(q.get("members", [])) == 3 for q in quorum)
        took = time.monotonic() - t0
        print(f"rabbitmq  {len(quorum)} quorum queues, {three} of them with 3 members; up in {took:.0f}s")
        print(f"haproxy   amqp://127.0.0.1:{cluster.ports.haproxy_amqp}/ in front of the three nodes")
        secrets_dir = cluster.dir.relative_to(ROOT) / "secrets"
        print(f"users     {', '.join(sorted(pw))} (passwords in {secrets_dir}/); a service's AMQP_URL:")
        print(
            f"  .venv/bin/python -m deploy.rabbitmq_users url booking --secrets {secrets_dir} "
            f"--base amqp://127.0.0.1:{cluster.ports.haproxy_amqp}/"
        )
        return 0
    if a.command == "down":
        cluster.down()
        print("cluster   stopped (data kept in .local/cluster/; delete it for a fresh cluster)")
        return 0
    ok = True
    for n in cluster.nodes:
        seen = n.running_nodes()
        ok &= len(seen) == 3
        print(f"rabbitmq  {n.name} pid {n.pid()} sees {len(seen)} running node(s)")
    assert cluster.haproxy is not None
    up = cluster.haproxy.answers() and amqp_answers(cluster.ports.haproxy_amqp)
    print(f"haproxy   :{cluster.ports.haproxy_amqp} {'answering' if up else 'down'}")
    print(json.dumps({"ok": ok and up}))
    return 0 if ok and up else 1


if __name__ == "__main__":
    sys.exit(main())
