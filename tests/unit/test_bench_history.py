"""The bench's `history` part: each service's module imported lazily, its rows turned into figures
with the smallest size as the baseline, missing and failing modules reported, the table written."""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any

import pytest

from bench import history, report
from bench.results import Run


def _module(name: str, rows: list[dict[str, Any]] | None = None, error: Exception | None = None) -> None:
    mod = types.ModuleType(name)

    async def run(sizes: list[int], runs: int) -> list[dict[str, Any]]:
        if error is not None:
            raise error
        assert rows is not None
        return [r for r in rows if r["size"] in sizes]

    mod.run = run  # type: ignore[attr-defined]
    sys.modules[name] = mod


@pytest.fixture
def modules() -> Any:
    names = ("bench.history_probe", "bench.history_broken")
    yield
    for name in names:
        sys.modules.pop(name, None)


def test_history_rows_become_figures_with_the_ratio_to_the_smallest_size(modules: None) -> None:
    rows = [  # the largest size first: the order a module returns must not matter
        {"read": "a day", "size": 1000, "p50_ms": 9.0, "p95_ms": 12.0, "docs_decoded": 40},
        {"read": "a day", "size": 10, "p50_ms": 3.0, "p95_ms": 4.0, "docs_decoded": 40},
        {"read": "by id", "size": 10, "p50_ms": 2.0, "p95_ms": 2.5, "docs_decoded": 1},
        {"read": "by id", "size": 1000, "p50_ms": 3.0, "p95_ms": 3.5, "docs_decoded": None},
    ]
    _module("bench.history_probe", rows)
    _module("bench.history_broken", error=RuntimeError("seed failed"))
    run = Run(machine={}, options={})
    said: list[str] = []
    asyncio.run(history.run(run, [10, 1000], 5, said.append, modules=("probe", "broken", "absent")))

    day = run.get("history/probe.a day_at_1000")
    assert day is not None and day.ratio == 3.0 and day.baseline == "history/probe.a day_at_10"
    assert run.get("history/probe.a day_at_10").ratio is None  # type: ignore[union-attr]
    table = {(r["read"], r["size"]): r for r in history.rows_of(run)}
    assert table[("probe: a day", 1000)]["goal"] is False  # 3 × the smallest size: over the goal
    assert table[("probe: by id", 1000)]["goal"] is True
    assert table[("probe: by id", 10)]["ratio"] == 1.0 and table[("probe: by id", 10)]["goal"] is None
    reasons = [s.reason for s in run.skipped]
    assert any("history_broken failed: RuntimeError: seed failed" in r for r in reasons)
    assert any("history_absent is missing" in r for r in reasons)
    assert len(said) == 2  # the two modules that ran

    text = report.markdown(run, None)
    assert "| probe: a day | 1,000 | 9.00 | 12.0 | 40 | 3.00 | **no** |" in text
    assert "`probe.a day_at_1000`" not in text  # in the history table, not the figures table


def test_history_is_a_part_of_the_default_run() -> None:
    from bench.__main__ import parse

    opts = parse([])
    assert "history" in opts.parts
    assert opts.history_sizes == (10_000, 100_000, 1_000_000) and opts.history_runs == 50
