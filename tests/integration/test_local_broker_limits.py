"""The local RabbitMQ node `deploy/local.py up` starts may open as many files as the machine allows.

Three pytest-xdist workers keep many test vhosts open at once, each with its message stores and
quorum queues; at 1024 open files RabbitMQ's file handle cache made every caller wait and the
whole broker stood still in a test run. Debian's `rabbitmq-server` starts the node through
`su rabbitmq`, which resets the soft limit to 1024, so deploy/local.py raises it from the node's
own environment file (`rabbit_env_file`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy import local
from tests import support


def _open_files_limit(pid: int) -> tuple[int, int]:
    line = next(
        ln for ln in Path(f"/proc/{pid}/limits").read_text().splitlines() if ln.startswith("Max open files")
    )
    soft, hard = re.findall(r"\d+", line)[:2]
    return int(soft), int(hard)


def test_the_local_broker_runs_with_the_hard_limit_of_open_files(servers: None) -> None:
    pid = local.rabbit_pid()
    if pid is None:  # CI always runs the local node (.ci/run -> make test -> deploy/local.py up)
        if support.in_ci():
            pytest.fail("CI=true but no local RabbitMQ node from deploy/local.py is running")
        pytest.skip("the broker is not one deploy/local.py started (AMQP_URL names another)")
    soft, hard = _open_files_limit(pid)
    assert soft == hard and soft > 1024, f"the node may open {soft} files (hard limit {hard})"
