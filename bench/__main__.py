"""`python -m bench` (`make bench`): the benchmark of the whole system, on this machine, in one run.

Parts (all by default; pick with --parts):
  baseline  raw aio-pika publish-with-confirms and consume, raw PyMongo insert_many/insert_one
  layer     the project's EventPublisher, Consumer and OutboxRelay over the same servers
  profile   cProfile of the project's publish and consume paths (top functions)
  e2e       HTTP intake -> confirmation email in Mailpit -> audit record, the load doubled from 1/s
            until a step does not hold: the knee, the cost per booking and the limit it implies
            (runs the baseline too: the limit divides its raw rates)
  audit     audit ingest, events/s
  timers    100,000 pending timers: memory, re-arm time after a restart, firing lateness
  history   each service's waited-for reads timed as the history grows (10,000 / 100,000 / 1,000,000)
The service parts start the four services as processes on free ports in the bench's own vhost
and databases (like the e2e tests do); everything the bench creates is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import env, history, report
from bench.e2e import STEPS
from bench.results import Run
from shared.logsafe import configure_logging

FULL_SIZES = ",".join(str(n) for n in history.SIZES)
PARTS = ("baseline", "layer", "profile", "e2e", "audit", "timers", "history")


@dataclass
class Options:
    parts: tuple[str, ...]
    messages: int
    window: int
    docs: int
    singles: int
    outbox_docs: int
    profile_messages: int
    loads: tuple[float, ...]
    step_seconds: float
    audit_events: int
    timers: int
    timer_fire: int
    history_sizes: tuple[int, ...]
    history_runs: int
    write: bool

    def record(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out.pop("write")
        out["parts"] = ",".join(self.parts)
        out["loads"] = ",".join(f"{x:g}" for x in self.loads)
        out["history_sizes"] = ",".join(str(x) for x in self.history_sizes)
        return out


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run in well under a minute")
    p.add_argument("--messages", type=int, help="messages per AMQP figure (default 2000)")
    p.add_argument("--window", type=int, default=64, help="publishes in flight when pipelined")
    p.add_argument("--docs", type=int, help="documents for insert_many (default 5000)")
    p.add_argument("--singles", type=int, help="one-at-a-time Mongo operations (default 200)")
    p.add_argument("--outbox-docs", type=int, help="documents through the outbox relay (default 200)")
    p.add_argument("--profile-messages", type=int, help="messages under the profiler (default 500)")
    p.add_argument("--loads", help="bookings/s, stepped until one does not hold (default 1,2,4,…,128)")
    p.add_argument("--step-seconds", type=float, help="seconds of load per step (default 10)")
    p.add_argument("--audit-events", type=int, help="events for audit ingest (default 600)")
    p.add_argument("--timers", type=int, help="pending timers (default 100000)")
    p.add_argument("--timer-fire", type=int, help="of which fire during the run (default 20)")
    p.add_argument("--history-sizes", help="documents behind each read (default 10000,100000,1000000)")
    p.add_argument("--history-runs", type=int, help="timed runs of each read per size (default 50)")
    p.add_argument("--no-write", action="store_true", help="print only; no JSON, no docs table")
    a = p.parse_args(argv)
    quick = a.quick
    parts = tuple(x.strip() for x in a.parts.split(",") if x.strip())
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts: {', '.join(sorted(unknown))}")

    def pick(value: Any, full: Any, small: Any) -> Any:
        return value if value is not None else (small if quick else full)

    return Options(
        parts=parts,
        messages=pick(a.messages, 2000, 500),
        window=a.window,
        docs=pick(a.docs, 5000, 2000),
        singles=pick(a.singles, 200, 100),
        outbox_docs=pick(a.outbox_docs, 200, 100),
        profile_messages=pick(a.profile_messages, 500, 300),
        loads=tuple(float(x) for x in pick(a.loads, ",".join(str(x) for x in STEPS), "1,2").split(",")),
        step_seconds=pick(a.step_seconds, 10.0, 5.0),
        audit_events=pick(a.audit_events, 600, 300),
        timers=pick(a.timers, 100_000, 5000),
        timer_fire=pick(a.timer_fire, 20, 20),
        history_sizes=tuple(int(x) for x in pick(a.history_sizes, FULL_SIZES, "1000,5000").split(",")),
        history_runs=pick(a.history_runs, 50, 10),
        write=not a.no_write,
    )


def say(text: str) -> None:
    report.console.print(f"[bold cyan]»[/bold cyan] {text}")


async def main(opts: Options) -> Run:
    problems = await env.check_servers()
    if problems:
        for name, why in problems.items():
            report.console.print(f"[red]{name} not answering: {why}[/red]")
        report.console.print("Start the servers with `make infra-up`.")
        raise SystemExit(2)
    run = Run(machine=await env.machine_info(), options=opts.record())
    async with env.sandbox() as box:
        if {"baseline", "layer", "e2e"} & set(opts.parts):  # e2e's limit divides the raw rates
            from bench import baseline

            run.mark("baseline")
            say(f"baseline: aio-pika, {opts.messages} messages; PyMongo, {opts.docs} documents")
            await baseline.run_amqp(run, box.amqp_url, opts.messages, opts.window)
            await baseline.run_mongo(run, box.db_prefix, opts.docs, opts.singles)
        if "layer" in opts.parts:
            from bench import layer

            run.mark("layer")
            say("layer: EventPublisher, Consumer, OutboxRelay")
            await layer.run(run, box, opts.messages, opts.window, opts.outbox_docs)
            await layer.run_conditional(run, box, opts.docs)
        if "profile" in opts.parts:
            from bench import profiling

            run.mark("profile")
            say(f"profile: cProfile over {opts.profile_messages} publishes and consumes")
            await profiling.run(run, box, opts.profile_messages)
        service_parts: list[str] = [p for p in ("e2e", "audit", "timers") if p in opts.parts]
        if service_parts:
            from bench import services

            run.mark("services")
            await services.run(run, box, opts, service_parts, say)
        if "history" in opts.parts:
            run.mark("history")
            await history.run(run, list(opts.history_sizes), opts.history_runs, say)
    return run


def cli(argv: list[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    configure_logging("bench", logging.WARNING)  # the one handler the in-process runtimes reuse
    started = time.perf_counter()
    run = asyncio.run(main(opts))
    report.show(run)
    if opts.write:
        path = report.write_json(run)
        report.write_doc(run, path)
        say(f"wrote {path.relative_to(env.ROOT)} and {report.DOC.relative_to(env.ROOT)}")
    say(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
