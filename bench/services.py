"""Parts 2–4 (e2e, audit, timers) run against the four services as real processes (`bench/stack.py`).

The parts import the stack's helpers from `bench.stack`; only this runner imports the parts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench import env
from bench.results import Run
from bench.stack import running_stack


async def run(run_: Run, box: env.Sandbox, opts: Any, parts: list[str], say: Callable[[str], None]) -> None:
    try:
        from tests.support.stack import Stack  # noqa: F401
    except Exception as exc:
        for part in parts:
            run_.skip(part, f"the e2e stack helpers (tests/support/stack.py) cannot be imported: {exc}")
        return
    say("starting the four services (booking, scheduler, notifier, audit) on free ports")
    try:
        async with running_stack(box, say) as stack:
            if "e2e" in parts:
                from bench import e2e

                await _guarded(run_, "e2e", e2e.run(run_, stack, box, opts, say))
            if "audit" in parts:
                from bench import ingest

                await _guarded(run_, "audit", ingest.run(run_, stack, box, opts, say))
            if "timers" in parts:
                from bench import timers

                await _guarded(run_, "timers", timers.run(run_, stack, box, opts, say))
    except AssertionError as exc:  # a service did not come up
        for part in parts:
            if not any(s.part == part for s in run_.skipped) and not any(
                f.part == part for f in run_.figures
            ):
                run_.skip(part, f"the stack did not start: {str(exc)[:600]}")


async def _guarded(run_: Run, part: str, coro: Any) -> None:
    """One part failing (an API changed under us) must not lose the figures of the others."""
    try:
        await coro
    except Exception as exc:
        run_.skip(part, f"failed: {type(exc).__name__}: {str(exc)[:400]}")
