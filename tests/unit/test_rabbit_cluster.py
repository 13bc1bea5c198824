"""deploy/rabbit_cluster.py (issue 20): the local 3-node cluster's ports, node configuration, cookie and
HAProxy configuration, checked without starting anything (tests/scale runs the cluster)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from deploy import local
from deploy.rabbit_cluster import Cluster, Ports, haproxy_config
from tests.support import missing_tool

#: the shared servers' ports (deploy/local.py, the Graph contract server) and epmd's
SHARED = {5672, 15672, 25672, 27017, 1025, 8025, 8443, 4369}


def all_ports(p: Ports) -> list[int]:
    return [p.haproxy_amqp, p.haproxy_monitor, *p.amqp, *p.api, *p.dist]


def test_cluster_up_ports_avoid_the_shared_servers_and_the_ephemeral_range() -> None:
    ports = all_ports(Ports.fixed())
    assert len(set(ports)) == len(ports), "two parts of the cluster on one port"
    assert not set(ports) & SHARED
    assert max(ports) < 32768, "inside the kernel's ephemeral range, where free_port() picks"
    moved = all_ports(Ports.fixed(30000))  # CLUSTER_PORT_BASE moves them all
    assert [p - 30000 for p in moved] == [p - 26700 for p in ports]


def test_each_node_has_its_own_name_ports_and_folders_and_knows_the_other_two(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, Ports.fixed(), tag="t")
    names = [n.name for n in cluster.nodes]
    assert names == ["t-1@localhost", "t-2@localhost", "t-3@localhost"]
    assert len({n.dir for n in cluster.nodes}) == 3 and len({n.log for n in cluster.nodes}) == 3
    for node in cluster.nodes:
        node.configure()
        conf = (node.dir / "rabbitmq.conf").read_text()
        assert f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}" in conf
        assert f"management.tcp.port = {node.api_port}" in conf
        assert "cluster_formation.peer_discovery_backend = classic_config" in conf
        assert all(f"= {name}" in conf for name in names)
        assert (
            "queue_leader_locator = balanced" in conf
            and "cluster_partition_handling = pause_minority" in conf
        )
        # quorum queues are declared without a group size (shared/topology.py): the default decides
        assert "{quorum_cluster_size, 3}" in (node.dir / "advanced.config").read_text()
        assert node.home == tmp_path / "home"


def test_one_erlang_cookie_for_the_three_nodes_readable_only_by_its_owner(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, Ports.fixed())
    cluster.cookie()
    cookie = tmp_path / "home" / ".erlang.cookie"
    first = cookie.read_text()
    assert len(first) == 40 and stat.S_IMODE(cookie.stat().st_mode) == 0o400
    cluster.cookie()  # a second `up` keeps it: the nodes' data is bound to it
    assert cookie.read_text() == first
    assert {n.home for n in cluster.nodes} == {tmp_path / "home"}


def test_local_haproxy_configuration_is_accepted_by_haproxy(tmp_path: Path) -> None:
    """`haproxy -c` on what `Cluster.up` writes (AMQP to the three nodes, health-checked by the
    protocol header; booking's two replicas on /readyz), and a broken copy refused."""
    binary = local.unpacked("haproxy")
    if binary is None:
        missing_tool("haproxy", "haproxy-binary")
    cluster = Cluster(tmp_path, Ports.fixed())
    text = haproxy_config(cluster.nodes, 26700, 26709, {"booking": (26730, [26731, 26732])})
    assert text.count("tcp-check send-binary 414d515000000901") == 1
    assert all(f"127.0.0.1:{n.amqp_port} check" in text for n in cluster.nodes)
    assert "on-marked-down shutdown-sessions" in text and "http-check send meth GET uri /readyz" in text

    def check(cfg: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "haproxy.cfg"
        path.write_text(cfg)
        return subprocess.run(
            [binary, "-c", "-q", "-f", str(path)], capture_output=True, text=True, check=False
        )

    assert check(text).returncode == 0, check(text).stderr
    assert check(text.replace("tcp-check expect binary", "tcp-check expects binary")).returncode != 0
