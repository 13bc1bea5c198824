"""The chaos drills. Their figures (duplicates, resends, reconnect times) are collected by
tests.support.drills and printed at the end of the run by tests/conftest.py, so a passing CI run
shows them too."""

from tests.support import drills


def figure(line: str) -> None:
    """Print a drill's figure (shown with -s or on failure) and keep it for the run's summary."""
    drills.figure(line, "chaos drill figures")
