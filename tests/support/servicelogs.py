"""A failed test's report shows the errors its service processes logged while it ran.

The e2e, chaos and replica tests run the services as processes logging to `.local/logs`; a CI clone
is deleted after the run, so without this a 500 or a crash would leave only the test's assertion.
Before each test's set-up the size of every log of this run (and of the local FerretDB's log) is
noted; if the test fails, the tracebacks and error lines written since are added to its report.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / ".local" / "logs"
SHARED_LOGS = ("ferretdb-local.log",)
ERROR_LINE = re.compile(r'\b(ERROR|CRITICAL|SQLITE_BUSY|database is locked|panic)\b|HTTP/1\.1" 5\d\d ')
MAX_LINES = 160

_sizes = pytest.StashKey[dict[Path, int]]()


def logs_of(run_id: str) -> Iterator[Path]:
    if not LOGS.is_dir():
        return
    for path in LOGS.iterdir():
        if run_id in path.name:
            yield from (path.rglob("*.log") if path.is_dir() else [path])
        elif path.name in SHARED_LOGS:
            yield path


def errors_since(path: Path, offset: int) -> list[str]:
    """Traceback blocks and error lines appended to `path` after `offset`."""
    with path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    out: list[str] = []
    in_traceback = False
    for line in lines:
        starts = line.startswith("Traceback") or "Exception in ASGI application" in line
        in_traceback = in_traceback or starts
        if in_traceback or ERROR_LINE.search(line):
            out.append(line[:400])
        if in_traceback and not starts and line[:1].strip():
            in_traceback = False  # the first unindented line after the frames: the exception itself
    return out


def report(run_id: str, sizes: dict[Path, int]) -> str:
    parts: list[str] = []
    for path in sorted(logs_of(run_id)):
        found = errors_since(path, sizes.get(path, 0))
        if found:
            parts.append(f"--- {path.relative_to(ROOT)} ({len(found)} lines)")
            parts.extend(found[-40:])
    return "\n".join(parts[-MAX_LINES:])


class ServiceLogs:
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        item.stash[_sizes] = {p: p.stat().st_size for p in logs_of(self.run_id)}  # before fixtures start

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        rep = outcome.get_result()
        if rep.failed:  # in its set-up (a service that would not start), its call or its teardown
            text = report(self.run_id, item.stash.get(_sizes, {}))
            if text:
                rep.sections.append((f"errors the service processes logged ({call.when})", text))
