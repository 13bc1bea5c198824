"""deploy/observability (issue 20): the alert rules and the dashboard ask for metrics that exist.

The services' metric names and labels are read from their real registries: each service's app is
built as in production (`create_app`, no server is reached before start-up) and every collector it
registered is asked for its families (shared/metrics.py, shared/mongo.py, shared/http.py, the
scheduler's and the notifier's own, FastStream's middleware). Exposition names follow the types:
a counter is `<name>_total`, a histogram `<name>_bucket`, `_sum` and `_count`. Names no service
registers must be listed in external-metrics.yml; RabbitMQ's are checked against the
rabbitmq_prometheus plugin installed on this machine. promtool checks the rules and the config and
runs alerts.test.yml: Debian's 2.42 (`make promtool`) and, where built, a current one (`make
promtool-go`). Each check also runs on a broken copy that it must catch. Without the plugin or a
promtool the test skips, except in CI (CI=true), where it fails: `make test` provides both.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.registry import Collector

from deploy import local
from shared.http import METRICS_PATH
from shared.settings import ServiceSettings
from tests.support import missing_tool

ROOT = Path(__file__).resolve().parents[2]
OBS = ROOT / "deploy" / "observability"
K8S = ROOT / "deploy" / "cluster" / "k8s"
APPS = tuple(sorted(p.parent.name for p in (ROOT / "services").glob("*/__main__.py")))
#: labels Prometheus puts on every scraped series
TARGET_LABELS = frozenset({"job", "instance"})
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
PROMQL_WORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)
RABBITMQ_PLUGIN = Path("/usr/lib/rabbitmq/lib")

Problems = list[str]


# --------------------------------------------------------------------------- what is exported


def settings_cls(app: str) -> type[ServiceSettings]:
    cls: type[ServiceSettings] = importlib.import_module(f"services.{app}.config").Settings
    return cls


def families(collector: Collector) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(name, type, label names) of what a collector exports, without needing any sample."""
    labelnames = getattr(collector, "_labelnames", None)
    if labelnames is not None and hasattr(collector, "_type"):  # a Counter, Gauge, Histogram...
        yield collector._name, collector._type, tuple(labelnames)  # type: ignore[attr-defined]
        return
    for family in collector.collect():  # a custom collector: its families name their labels
        yield family.name, family.type, tuple(getattr(family, "_labelnames", ()))


@cache
def exported() -> dict[str, frozenset[str]]:
    """Exposition name -> label names, over every service."""
    out: dict[str, set[str]] = {}
    for app in APPS:
        settings = settings_cls(app)(environment="test", mongodb_url="mongodb://127.0.0.1:9/")
        registry = importlib.import_module(f"services.{app}.app").create_app(settings).state.runtime.metrics
        for collector in list(registry._collector_to_names):
            for name, kind, labels in families(collector):
                extra = {"le"} if kind == "histogram" else set()
                for suffix in SUFFIXES[kind]:
                    out.setdefault(name + suffix, set()).update(
                        labels, TARGET_LABELS, extra if suffix == "_bucket" else ()
                    )
    return {name: frozenset(labels) for name, labels in out.items()}


def external() -> dict[str, frozenset[str]]:
    listed = yaml.safe_load((OBS / "external-metrics.yml").read_text())
    return {name: frozenset(labels) for source in listed.values() for name, labels in source.items()}


# --------------------------------------------------------------------------- what the files ask for


def rule_expressions(rules: dict[str, Any]) -> dict[str, str]:
    return {f"alert {r['alert']}": r["expr"] for g in rules["groups"] for r in g["rules"]}


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    out = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var["type"] == "query":
            out[f"variable {var['name']}"] = var["definition"]
    return out


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The metric names of an expression with the labels matched on each, and the labels its
    by/without/on/ignoring/group_* clauses and label_values() name. Enough PromQL for our own files:
    string literals, ranges and numbers are set aside, a name followed by `(` is a function."""
    grouped: set[str] = set()
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # [5m], [$__rate_interval]
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        grouped |= {label.strip() for label in m[1].split(",") if label.strip()}
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    for m in re.finditer(r"label_values\(\s*([\w:]+)\s*,\s*(\w+)\s*\)", expr):
        grouped.add(m[2])
    expr = re.sub(r"label_values\(\s*([\w:]+)\s*,\s*\w+\s*\)", r"label_values(\1)", expr)
    found = []
    for m in re.finditer(
        r"([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?(\s*\()?", re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    ):
        name, matchers, call = m[1], m[2], m[3]
        if call or name in PROMQL_WORDS or name.startswith("__"):
            continue
        found.append((name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers or ""))))
    return found, grouped


def check_names(expressions: dict[str, str]) -> Problems:
    known = {**exported(), **external()}
    problems = []
    for where, expr in expressions.items():
        used, grouped = selectors(expr)
        if not used:
            problems.append(f"{where}: names no metric")
        for name, matched in used:
            if name not in known:
                problems.append(f"{where}: {name} is not exported by any service nor listed as external")
            elif unknown := matched - known[name]:
                problems.append(f"{where}: {name} has no label {sorted(unknown)}")
        labels = set().union(*(known.get(name, frozenset()) for name, _ in used))
        if unknown := grouped - labels:
            problems.append(f"{where}: groups by {sorted(unknown)}, a label none of its metrics has")
    return problems


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return dict(yaml.safe_load((OBS / "alerts.yml").read_text()))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads((OBS / "dashboard.json").read_text()))


def assert_check(check: Callable[[Any], Problems], real: Any, broken: Any, *faults: str) -> None:
    assert check(real) == []
    found = check(broken)
    for fault in faults:
        assert any(fault in p for p in found), f"the broken copy was not caught for {fault!r}: {found}"


def test_the_services_export_what_they_are_known_by() -> None:
    names = exported()
    assert {"consult_deliveries_total", "consult_outbox_backlog", "consult_ready"} <= set(names)
    assert {"queue", "outcome", "service"} <= names["consult_deliveries_total"]
    assert "consult_scheduler_timer_lateness_seconds_bucket" in names  # the scheduler's own
    assert "consult_notifier_ambiguous_resends_total" in names  # the notifier's own
    assert "consult_deliveries" not in names  # a counter is exported as _total only


def test_every_metric_in_the_alert_rules_is_exported(rules: dict[str, Any]) -> None:
    real = rule_expressions(rules)
    broken = dict(real)
    broken["alert OutboxBacklog"] = real["alert OutboxBacklog"].replace(
        "consult_outbox_backlog", "consult_outbox_backlogs"
    )
    broken["alert TimersLate"] = real["alert TimersLate"].replace("_seconds_bucket", "_seconds")
    broken["alert InboxWaitLong"] = real["alert InboxWaitLong"].replace(
        "consult_deliveries_total", "consult_deliveries"
    )
    broken["alert MessagesBeingParked"] = real["alert MessagesBeingParked"].replace(
        "by (service)", "by (office)"
    )
    broken["alert ServiceNotReady"] = real["alert ServiceNotReady"].replace('check="ready"', 'probe="ready"')
    assert_check(
        check_names,
        real,
        broken,
        "consult_outbox_backlogs is not exported",
        "alert TimersLate: consult_scheduler_timer_lateness_seconds is not exported",
        "alert InboxWaitLong: consult_deliveries is not exported",
        "groups by ['office']",
        "consult_ready has no label ['probe']",
    )


def test_every_metric_on_the_dashboard_is_exported(dashboard: dict[str, Any]) -> None:
    real = dashboard_expressions(dashboard)
    assert len(real) >= 20
    broken = copy.deepcopy(dashboard)
    broken["panels"][1]["targets"][0]["expr"] = "sum(rabbitmq_queue_depth)"
    broken["templating"]["list"][1]["definition"] = "label_values(consult_deliveries_total, office)"
    assert_check(
        check_names,
        real,
        dashboard_expressions(broken),
        "rabbitmq_queue_depth is not exported",
        "variable service: groups by ['office']",
    )


def rabbitmq_plugin_names() -> set[str] | None:
    """The metric names the installed rabbitmq_prometheus plugin's core collector defines: the atoms in
    the literal table (LitT, zlib) of its compiled module, prefixed rabbitmq_ as the plugin does."""
    beams = sorted(
        RABBITMQ_PLUGIN.glob(
            "rabbitmq_server-*/plugins/rabbitmq_prometheus-*/ebin/prometheus_rabbitmq_core_metrics_collector.beam"
        )
    )
    if not beams:
        return None
    data = beams[-1].read_bytes()
    chunks, at = {}, 12  # "FOR1", size, "BEAM"
    while at + 8 <= len(data):
        tag, size = data[at : at + 4].decode("latin-1"), struct.unpack(">I", data[at + 4 : at + 8])[0]
        chunks[tag] = data[at + 8 : at + 8 + size]
        at += 8 + ((size + 3) & ~3)
    literals = zlib.decompress(chunks["LitT"][4:])
    atoms = set()
    for m in re.finditer(rb"\x77", literals):  # SMALL_ATOM_UTF8_EXT: tag, length, name
        start = m.end() + 1
        atoms.add(literals[start : start + literals[m.end()]].decode("utf-8", "replace"))
    return {f"rabbitmq_{atom}" for atom in atoms}


def check_rabbitmq_names(given: tuple[set[str], set[str]]) -> Problems:
    listed, plugin = given
    return [f"{name} is not a metric of the rabbitmq_prometheus plugin" for name in sorted(listed - plugin)]


def test_the_rabbitmq_metrics_are_the_plugins() -> None:
    plugin = rabbitmq_plugin_names()
    if plugin is None:
        missing_tool("the rabbitmq_prometheus plugin (Debian's rabbitmq-server has it)", "infra-up")
    listed = set(yaml.safe_load((OBS / "external-metrics.yml").read_text())["rabbitmq"])
    assert_check(
        check_rabbitmq_names,
        (listed, plugin),
        (listed | {"rabbitmq_queue_head_age"}, plugin),
        "rabbitmq_queue_head_age",
    )


# --------------------------------------------------------------------------- what the rules cover


#: what issue 20 asks the rules to watch, and the alerts that do
COVERAGE = {
    "queue depth": {"InboxDeep"},
    "queue age": {"InboxWaitLong", "InboxStalled"},
    "parked messages > 0": {"MessagesParked"},
    "outbox backlog": {"OutboxBacklog"},
    "timer lateness": {"TimersLate"},
    "a service not ready": {"ServiceNotReady", "ServiceDown"},
    "ambiguous email resends": {"AmbiguousEmailResend"},
}


def check_rules(rules: dict[str, Any]) -> Problems:
    problems, alerts = [], {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    for topic, names in COVERAGE.items():
        if missing := names - set(alerts):
            problems.append(f"{topic}: no alert {sorted(missing)}")
    for name, rule in alerts.items():
        if rule.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
            problems.append(f"{name}: no severity")
        if not rule.get("annotations", {}).get("summary"):
            problems.append(f"{name}: no summary")
    if "> 0" not in alerts.get("MessagesParked", {}).get("expr", ""):
        problems.append("MessagesParked: not every parked message")
    return problems


def test_the_alerts_watch_what_the_issue_asks(rules: dict[str, Any]) -> None:
    broken = copy.deepcopy(rules)
    for group in broken["groups"]:
        group["rules"] = [r for r in group["rules"] if r["alert"] != "TimersLate"]
        for r in group["rules"]:
            if r["alert"] == "MessagesParked":
                r["expr"] = r["expr"].replace("> 0", "> 10")
            if r["alert"] == "InboxDeep":
                del r["labels"]
    assert_check(
        check_rules,
        rules,
        broken,
        "timer lateness: no alert",
        "MessagesParked: not every",
        "InboxDeep: no severity",
    )


def check_scrape_config(given: tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]) -> Problems:
    """Each service is scraped at its metrics path and port under the job name the `up` rule matches."""
    config, rules, deployments = given
    problems = []
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    up = next(r["expr"] for g in rules["groups"] for r in g["rules"] if r["alert"] == "ServiceDown")
    pattern = re.search(r'up\{job=~"([^"]+)"\}', up)
    for app in APPS:
        job, port = jobs.get(f"consult-{app}"), settings_cls(app).model_fields["http_port"].default
        if job is None or not (pattern and re.fullmatch(pattern[1], job["job_name"])):
            problems.append(f"{app}: not scraped under a job ServiceDown watches")
            continue
        if job.get("metrics_path") != f"{METRICS_PATH}/" or job["dns_sd_configs"][0]["port"] != port:
            problems.append(f"{app}: scraped elsewhere than {METRICS_PATH}/ on {port}")
    for d in deployments:
        app, notes = d["metadata"]["name"], d["spec"]["template"]["metadata"].get("annotations", {})
        port = settings_cls(app).model_fields["http_port"].default
        if notes.get("prometheus.io/path") != f"{METRICS_PATH}/" or notes.get("prometheus.io/port") != str(
            port
        ):
            problems.append(f"k8s {app}: annotated with another metrics path or port")
    if "alerts.yml" not in config.get("rule_files", []):
        problems.append("prometheus.yml does not load alerts.yml")
    return problems


def test_prometheus_scrapes_every_service_where_it_serves_its_metrics(rules: dict[str, Any]) -> None:
    config = yaml.safe_load((OBS / "prometheus.yml").read_text())
    deployments = [
        d
        for f in sorted(K8S.glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d and d.get("kind") == "Deployment"
    ]
    broken = copy.deepcopy(config)
    broken["scrape_configs"] = [j for j in broken["scrape_configs"] if j["job_name"] != "consult-audit"]
    broken["scrape_configs"][0]["metrics_path"] = "/metrics/x"
    broken_deps = copy.deepcopy(deployments)
    broken_deps[0]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] = "9999"
    assert_check(
        check_scrape_config,
        (config, rules, deployments),
        (broken, rules, broken_deps),
        "audit: not scraped",
        "booking: scraped elsewhere",
        "annotated with another metrics path or port",
    )


# --------------------------------------------------------------------------- promtool

#: `make promtool-go`: a current Prometheus's promtool (Go module proxy, slow), run too where built
PROMTOOL_GO = Path.home() / ".cache" / "consult-promtool-go" / "bin" / "promtool"


def promtools() -> list[Path]:
    """PROMTOOL if set, else the promtool on the PATH or Debian's 2.42 (`make promtool`); and a current
    Prometheus's (`make promtool-go`) where it is built: the files must suit both."""
    first = Path(os.environ["PROMTOOL"]) if os.environ.get("PROMTOOL") else local.unpacked("promtool")
    return list(dict.fromkeys(p for p in (first, PROMTOOL_GO) if p is not None and p.is_file()))


def test_promtool_accepts_the_rules_and_the_config_and_the_rules_fire(tmp_path: Path) -> None:
    """promtool's syntax checks, and its unit tests of the rules (alerts.test.yml): a parked message,
    a stalled inbox, two lease holders and an unready replica raise their alerts. Broken copies: an
    unclosed parenthesis fails the syntax check, a threshold moved fails the unit tests. Skipped
    without a promtool, except in CI, where it fails."""
    binaries = promtools()
    if not binaries:
        missing_tool("promtool", "promtool")
    for binary in binaries:
        check_with_promtool(binary, tmp_path)


def check_with_promtool(binary: Path, tmp_path: Path) -> None:
    def run(*args: str, cwd: Path = OBS) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, check=False)

    for args in (
        ("check", "rules", "alerts.yml"),
        ("check", "config", "prometheus.yml"),
        ("test", "rules", "alerts.test.yml"),
    ):
        done = run(*args)
        assert done.returncode == 0, f"{binary} {' '.join(args)}: {done.stdout}{done.stderr}"
    rules = (OBS / "alerts.yml").read_text()
    (tmp_path / "alerts.test.yml").write_text((OBS / "alerts.test.yml").read_text())
    (tmp_path / "alerts.yml").write_text(rules.replace("sum by (queue) (", "sum by (queue) ((", 1))
    assert run("check", "rules", "alerts.yml", cwd=tmp_path).returncode != 0, (
        f"{binary}: an unclosed parenthesis passed"
    )
    (tmp_path / "alerts.yml").write_text(
        rules.replace('{queue=~".+\\\\.parking"}) > 0', '{queue=~".+\\\\.parking"}) > 1')
    )
    assert rules != (tmp_path / "alerts.yml").read_text()
    assert run("test", "rules", "alerts.test.yml", cwd=tmp_path).returncode != 0, (
        f"{binary}: a moved threshold passed"
    )
