"""Prints the chaos drills' figures in the terminal summary (issue 13: the counts per run)."""

from __future__ import annotations

import pytest

from tests.chaos import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("chaos drill figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
