"""Part `history`: the reads a person or a handler waits for, timed as the history behind them grows.

Each service's module (`bench/history_booking.py`, `history_scheduler.py`, `history_audit.py`, owned
by the service's developers) seeds the collections its reads touch to each size and times each read
`runs` times: `async def run(sizes: list[int], runs: int) -> list[dict]`, rows
`{"read", "size", "p50_ms", "p95_ms", "docs_decoded"}`. The measured day or office keeps its own
volume at every size (history grows by more days and offices, not a fatter day), so a read that
touches only its bucket keeps its time. Modules are imported lazily: one not written yet is
reported as missing, one that fails is reported with its error, and the others still run.

A figure per read and size (`history/<module>.<read>_at_<size>`, p50 in ms) has the same read at the
smallest size as its baseline, so its ratio is the growth; the goal is at most 2 at the largest size.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from bench.results import Figure, Run

PART = "history"
MODULES = ("booking", "scheduler", "audit")
SIZES = (10_000, 100_000, 1_000_000)
#: p50 at the largest size ÷ p50 at the smallest, at most (issue 19)
GOAL = 2.0


def figure_name(module: str, read: str, size: int) -> str:
    return f"{module}.{read}_at_{size}"


def figures_of(module: str, rows: list[dict[str, Any]], seconds: float) -> list[Figure]:
    """The module's rows as figures, each read's smallest size first (the others' baseline)."""
    smallest: dict[str, int] = {}
    for row in rows:
        read, size = str(row["read"]), int(row["size"])
        smallest[read] = min(size, smallest.get(read, size))
    out = []
    for row in sorted(rows, key=lambda r: (str(r["read"]), int(r["size"]))):
        read, size = str(row["read"]), int(row["size"])
        base = figure_name(module, read, smallest[read])
        p50, p95 = float(row["p50_ms"]), float(row["p95_ms"])
        out.append(
            Figure(
                PART,
                figure_name(module, read, size),
                round(p50, 2),
                "ms",
                f"{module}: {read}, p50 with {size:,} documents in the collections it reads",
                baseline=None if size == smallest[read] else f"{PART}/{base}",
                extra={
                    "module": module,
                    "read": read,
                    "size": size,
                    "p50_ms": round(p50, 2),
                    "p95_ms": round(p95, 2),
                    "docs_decoded": row.get("docs_decoded"),
                    "module_seconds": round(seconds, 1),
                    **{k: v for k, v in row.items() if k not in ("read", "size", "p50_ms", "p95_ms")},
                },
            )
        )
    return out


def rows_of(run_: Run) -> list[dict[str, Any]]:
    """The history figures of a run as table rows: read, size, p50, p95, ratio to the smallest size,
    and whether the largest size keeps within the goal."""
    figures = [f for f in run_.figures if f.part == PART]
    largest: dict[tuple[str, str], int] = {}
    for f in figures:
        key = (f.extra["module"], f.extra["read"])
        largest[key] = max(largest.get(key, 0), int(f.extra["size"]))
    rows = []
    for f in figures:
        key = (f.extra["module"], f.extra["read"])
        ratio = 1.0 if f.baseline is None else f.ratio
        at_largest = int(f.extra["size"]) == largest[key] and f.baseline is not None
        rows.append(
            {
                "read": f"{key[0]}: {key[1]}",
                "size": int(f.extra["size"]),
                "p50_ms": f.extra["p50_ms"],
                "p95_ms": f.extra["p95_ms"],
                "docs_decoded": f.extra.get("docs_decoded"),
                "ratio": ratio,
                "goal": (None if not at_largest or ratio is None else ratio <= GOAL),
            }
        )
    return rows


async def run(
    run_: Run,
    sizes: list[int],
    runs: int,
    say: Callable[[str], None],
    modules: tuple[str, ...] = MODULES,
) -> None:
    for module in modules:
        name = f"bench.history_{module}"
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module is there but something it imports is not
                run_.skip(PART, f"{name} does not import: {exc}")
            else:
                run_.skip(PART, f"{name} is missing (not written yet): its reads are not measured")
            continue
        say(f"history: {module}, sizes {', '.join(f'{s:,}' for s in sizes)}, {runs} runs per read")
        started = time.perf_counter()
        try:
            rows = await mod.run(list(sizes), runs)
        except Exception as exc:
            run_.skip(PART, f"{name} failed: {type(exc).__name__}: {str(exc)[:400]}")
            continue
        for figure in figures_of(module, rows, time.perf_counter() - started):
            run_.add(figure)
