"""The chaos drills. Their figures (duplicates, resends, reconnect times) are collected in FIGURES
and printed at the end of the run by tests/chaos/conftest.py, so a passing CI run shows them too."""

FIGURES: list[str] = []


def figure(line: str) -> None:
    """Print a drill's figure (shown with -s or on failure) and keep it for the run's summary."""
    print(line)
    FIGURES.append(line.strip())
