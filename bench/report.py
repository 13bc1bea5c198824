"""Show a run: a rich table on the terminal, JSON in bench/results/, a table in docs/performance.md."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import history
from bench.env import ROOT
from bench.results import Figure, Run

RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

console = Console()
if not console.is_terminal:  # logs and CI: wide enough that the table stays readable
    console = Console(width=180)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def _latency(f: Figure) -> str:
    lat = f.extra.get("latency_ms")
    if not lat:
        return ""
    return f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f}"


def show(run: Run) -> None:
    table = Table(title="Benchmark", show_lines=False)
    for col, justify in (
        ("part", "left"),
        ("figure", "left"),
        ("value", "right"),
        ("unit", "left"),
        ("ratio", "right"),
        ("p50/p95/p99 ms", "right"),
        ("meaning", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for f in run.figures:
        if f.part == history.PART:
            continue  # a table of its own
        ratio = "" if f.ratio is None else f"{f.ratio:.2f} × {f.baseline}"
        table.add_row(f.part, f.name, _fmt(f.value), f.unit, ratio, _latency(f), f.meaning)
    console.print(table)
    if rows := history.rows_of(run):
        show_history(rows)
    for f in run.figures:
        if cpu := f.extra.get("cpu_cores_by_process"):
            console.print(f"CPU during {f.key} (cores, 2 = the whole machine): {_cpu(cpu)}")
    for line in accounting(run):
        console.print(line.replace("`", ""))
    for name, summaries in run.profiles.items():
        show_profile(name, summaries[0])
    if run.mongo_time:
        show_mongo_time(run.mongo_time)
    for s in run.skipped:
        console.print(f"[yellow]{s.part}: not available: {s.reason}[/yellow]")


HISTORY_COLUMNS = ("read", "size", "p50 ms", "p95 ms", "docs decoded", "ratio to smallest", "goal ≤ 2×")


def _history_cells(r: dict[str, Any]) -> tuple[str, ...]:
    goal = "" if r["goal"] is None else ("yes" if r["goal"] else "**no**")
    return (
        r["read"],
        f"{r['size']:,}",
        _fmt(r["p50_ms"]),
        _fmt(r["p95_ms"]),
        "" if r["docs_decoded"] is None else f"{r['docs_decoded']:,}",
        "" if r["ratio"] is None else f"{r['ratio']:.2f}",
        goal,
    )


def show_history(rows: list[dict[str, Any]]) -> None:
    title = "history: reads as the data behind them grows (ratio: p50 ÷ p50 at the smallest size)"
    table = Table(title=title)
    for col in HISTORY_COLUMNS:
        table.add_column(col, justify="left" if col == "read" else "right")
    for r in rows:
        table.add_row(*(c.replace("**", "") for c in _history_cells(r)))
    console.print(table)


def accounting(run: Run) -> list[str]:
    """What one booking cost at each e2e step, and the limit and knee drawn from it."""
    lines = []
    for f in run.figures:
        if use := f.extra.get("per_booking"):
            held = "held" if f.extra.get("held") else f"did not hold: {f.extra.get('not_held_because')}"
            parts = [
                f"{key.replace('_', ' ')} {v['total']:g} ({_shares(v)})"
                for key, v in use.items()
                if key != "cpu_ms"
            ]
            lines.append(
                f"- per booking at `{f.key}` ({held}): "
                + "; ".join(parts)
                + f"; CPU ms {_shares(use['cpu_ms'])}"
                f" = {use['cpu_ms']['total']:g} without the bench"
            )
    if (limit := run.get("e2e/limit")) is not None:
        res = limit.extra["resources"]
        lines.append(
            "- limit per resource (raw rate ÷ use per booking): "
            + ", ".join(
                f"{k} {r['raw_per_s']:g}/s ÷ {r['per_booking']:g} = {r['limit_per_s']:g}/s"
                for k, r in res.items()
            )
            + f"; scarcest: {limit.extra['scarcest']}"
        )
    if (knee := run.get("e2e/knee")) is not None:
        ratio = "" if knee.ratio is None else f", knee ÷ limit {knee.ratio:.2f}"
        why = knee.extra.get("stopped_because")
        lines.append(f"- knee {knee.value:g} bookings/s{ratio}" + (f"; the next step: {why}" if why else ""))
    return lines


def _shares(v: dict[str, float]) -> str:
    return ", ".join(f"{k} {x:g}" for k, x in v.items() if k != "total" and x)


def show_profile(name: str, summary: dict[str, Any]) -> None:
    table = Table(title=f"profile: {name} ({summary['us_per_message']} µs of profiled CPU per message)")
    table.add_column("self time by package")
    table.add_column("share", justify="right")
    table.add_column("µs/msg", justify="right")
    table.add_column("top self-time functions")
    table.add_column("µs/msg", justify="right")
    packages, functions = summary["self_time_by_package"], summary["top_self_time"]
    for i in range(max(len(packages), len(functions))):
        p = packages[i] if i < len(packages) else None
        f = functions[i] if i < len(functions) else None
        table.add_row(
            p["package"] if p else "",
            f"{p['share']:.0%}" if p else "",
            f"{p['us_per_message']}" if p else "",
            f["function"] if f else "",
            f"{f['self_us']}" if f else "",
        )
    console.print(table)


def show_mongo_time(rows: list[dict[str, Any]]) -> None:
    table = Table(title="e2e: where the services spent their MongoDB time (consult_mongo_command_seconds)")
    for col in ("service", "command", "collection", "filter", "seconds", "calls", "mean ms"):
        table.add_column(col, justify="right" if col in ("seconds", "calls", "mean ms") else "left")
    for r in rows:
        table.add_row(
            r["service"],
            r["command"],
            r["collection"],
            r["shape"],
            f"{r['seconds']:.2f}",
            str(r["calls"]),
            f"{r['mean_ms']:.1f}",
        )
    console.print(table)


def write_json(run: Run, out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{time.strftime('%Y-%m-%d')}.json"
    path.write_text(json.dumps(run.to_json(), indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def markdown(run: Run, json_path: Path | None) -> str:
    m = run.machine
    lines = [
        f"Run of {m.get('started_at', '?')} on {m.get('nproc')} cores ({m.get('cpu')}, "
        f"{m.get('memory_gib')} GiB), Python {m.get('python')}, RabbitMQ {m.get('rabbitmq')} "
        f"(Erlang {m.get('erlang')}), FerretDB {m.get('ferretdb')} (SQLite), Mailpit {m.get('mailpit')}. "
        f"Options: `{_options(run.options)}`."
        + (f" Raw figures: `{json_path.relative_to(ROOT)}`." if json_path else ""),
        "",
        "| part | figure | value | unit | ratio to baseline | p50 / p95 / p99 ms | what it measures |",
        "| --- | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for f in run.figures:
        if f.part == history.PART:
            continue  # a table of its own
        ratio = "" if f.ratio is None else f"{f.ratio:.2f} × `{f.baseline}`"
        lines.append(
            f"| {f.part} | `{f.name}` | {_fmt(f.value)} | {f.unit} | {ratio} | {_latency(f)} | {f.meaning} |"
        )
    if rows := history.rows_of(run):
        lines += [
            "",
            "History: each read's p50 and p95 as the collections it reads grow; ratio = p50 ÷ p50 at the "
            "smallest size (goal: at most 2 at the largest):",
            "",
            "| " + " | ".join(HISTORY_COLUMNS) + " |",
            "| --- | " + " | ".join("---:" for _ in HISTORY_COLUMNS[1:]) + " |",
        ]
        lines += ["| " + " | ".join(_history_cells(r)) + " |" for r in rows]
    cpu_lines = [
        f"- `{f.key}`: {_cpu(cpu)}" for f in run.figures if (cpu := f.extra.get("cpu_cores_by_process"))
    ]
    if cpu_lines:
        lines += [
            "",
            "CPU by process while the service figures were measured (cores; 2 = the whole machine):",
        ]
        lines += cpu_lines
    if cost := accounting(run):
        lines += [
            "",
            "End to end, what one booking cost (from the services' `/metrics` and /proc) and the knee:",
            "",
        ]
        lines += cost
    for name, summaries in run.profiles.items():
        s = summaries[0]
        top = ", ".join(f"{p['package']} {p['share']:.0%}" for p in s["self_time_by_package"][:6])
        lines.append(f"- profile `{name}`: {s['us_per_message']} µs CPU per message; self time: {top}")
    if run.mongo_time:
        lines += [
            "",
            "Where the services spent their MongoDB time during the e2e part"
            " (`consult_mongo_command_seconds`;"
            " filter `id` = exactly `{_id: value}`):",
            "",
            "| service | command | collection | filter | seconds | calls | mean ms |",
            "| --- | --- | --- | --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {r['service']} | {r['command']} | {r['collection']} | {r['shape']} | {r['seconds']:.2f} "
            f"| {r['calls']} | {r['mean_ms']:.1f} |"
            for r in run.mongo_time
        ]
    if run.skipped:
        lines.append("")
        lines.extend(f"- **{s.part}**: not available: {s.reason}" for s in run.skipped)
    return "\n".join(lines)


def _cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if v >= 0.01)


def _options(options: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in options.items())


def write_doc(run: Run, json_path: Path | None, doc: Path = DOC) -> None:
    """Replace the generated section of docs/performance.md; the prose around it stays."""
    block = f"{BEGIN}\n{markdown(run, json_path)}\n{END}"
    text = doc.read_text() if doc.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
