"""The Makefile and .ci/run call scripts and commands that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text()
#: `$(PY) deploy/<script>.py <command>` lines of the Makefile
CALLS = sorted(set(re.findall(r"\$\(PY\) (deploy/\w+\.py) (\w+)", MAKEFILE)))


def targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", MAKEFILE, re.M))


def test_the_makefile_drives_the_deploy_scripts() -> None:
    assert ("deploy/processes.py", "up") in CALLS and ("deploy/processes.py", "down") in CALLS
    assert ("deploy/local.py", "up") in CALLS and ("deploy/local.py", "down") in CALLS


@pytest.mark.parametrize(("script", "command"), CALLS)
def test_each_deploy_call_names_a_command_the_script_has(script: str, command: str) -> None:
    assert (ROOT / script).is_file()
    usage = subprocess.run(
        [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout
    choices = re.search(r"\{([\w,]+)\}", usage)
    assert choices and command in choices[1].split(","), f"{script} has no `{command}`: {usage[:300]}"


def test_phony_targets_exist_and_say_what_they_do() -> None:
    phony = set(re.search(r"^\.PHONY: (.+)$", MAKEFILE, re.M)[1].split())  # type: ignore[index]
    assert phony <= targets(), phony - targets()
    undocumented = [t for t in phony if not re.search(rf"^{re.escape(t)}:.*## ", MAKEFILE, re.M)]
    assert not undocumented, "`make help` lists only targets with a ## comment"


def test_ci_runs_make_test_strictly() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert re.search(r"^make\b.* test$", ci, re.M), ".ci/run must run `make test`"
    assert "test" in targets()
