"""deploy/cluster (issue 20): the cluster compose file and the Kubernetes manifests agree with the code.

No Docker engine and no Kubernetes cluster here: every file is parsed (PyYAML) and checked against
what the code says: the services from `services/*/__main__.py`, their ports from their Settings, the
probe paths from shared/http.py, the queue arguments from shared/topology.py (recorded as
deploy/rabbitmq_users.py records them), the MongoDB URLs' options as the services' own client
(shared.mongo.connect) reads them, and the scheduler's lease from services/scheduler/store/lease.py.

Each check returns what it finds wrong. Each test runs its check on the real files, which must give
nothing, and on a copy broken on purpose, which must give the fault: a check that cannot fail fails.
"""

from __future__ import annotations

import copy
import importlib
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args
from urllib.parse import SplitResult, parse_qs, urlsplit

import pytest
import yaml
from pydantic import SecretStr
from pymongo import ReadPreference

from deploy import local, mongo_users, rabbitmq_users
from services.scheduler.config import Settings as SchedulerSettings
from shared import topology
from shared.http import HEALTH_PATH, READY_PATH
from shared.mongo import connect
from shared.settings import ServiceSettings
from tests.support import missing_tool

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "deploy" / "cluster"
K8S = CLUSTER / "k8s"
#: every service the repository runs (`python -m services.<name>`): the console too once it exists
APPS = tuple(sorted(p.parent.name for p in (ROOT / "services").glob("*/__main__.py")))
#: environment names whose values are secrets; URLs with a password are checked apart
SECRET_NAME = re.compile(r"(PASS(WORD)?|SECRET|KEYS?|COOKIE|TOKEN|CREDENTIALS)(_|$)")
#: names SECRET_NAME matches whose settings hold no secret: the console's key directory and whether its
#: cookies are Secure (test_the_names_excused_from_secrets_hold_no_text checks their settings' types)
NOT_SECRET = frozenset({"CONSOLE_KEY_DIR", "COOKIE_SECURE"})
COMPOSE_REF = re.compile(r"\$\{\w+:\?[^}]*\}")  # ${NAME:?message}: required, no default
ANY_COMPOSE_REF = re.compile(r"\$\{[^}]*\}")
REQUIRED, OTHER = "required-variable", "other-variable"
K8S_REF = re.compile(r"\$\((\w+)\)")  # $(NAME): an earlier variable of the same container
SMTP_PORTS = {465, 587}  # implicit TLS and STARTTLS submission (deploy/TLS.md)
#: who may be reached from outside the namespace: the portals' booking, and the console (issue 18)
PUBLIC = {"booking", "console"}

Doc = dict[str, Any]
Problems = list[str]


def settings_cls(app: str) -> type[ServiceSettings]:
    cls: type[ServiceSettings] = importlib.import_module(f"services.{app}.config").Settings
    return cls


def port(app: str) -> int:
    return int(settings_cls(app).model_fields["http_port"].default)


#: the services the console calls, by its settings `<service>_url` (services/console/clients.py)
CALLED = tuple(app for app in APPS if f"{app}_url" in settings_cls("console").model_fields)
#: whose HTTP replicas HAProxy balances in the compose cluster: the public ones and the console's calls
BALANCED = tuple(sorted(PUBLIC | set(CALLED)))


def secret_name(name: str) -> bool:
    return name not in NOT_SECRET and bool(SECRET_NAME.search(name))


def assert_check(check: Callable[[Any], Problems], real: Any, broken: Any, fault: str) -> None:
    """`check` finds nothing wrong in the real files and `fault` in the broken copy."""
    assert check(real) == []
    found = check(broken)
    assert any(fault in p for p in found), f"the broken copy was not caught for {fault!r}: {found}"


# --------------------------------------------------------------------------- the files


@pytest.fixture(scope="module")
def compose() -> Doc:
    return dict(yaml.safe_load((CLUSTER / "docker-compose.yml").read_text()))


@pytest.fixture(scope="module")
def manifests() -> list[Doc]:
    """Every document of every resource the kustomization lists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc
    ]


def compose_apps(compose: Doc) -> dict[str, Doc]:
    """app -> its compose service, found by the module the service runs."""
    out = {}
    for service in compose["services"].values():
        match service.get("command"):
            case ["python", "-m", module] if module.startswith("services."):
                out[module.removeprefix("services.")] = service
    return out


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def deployments(docs: list[Doc]) -> dict[str, Doc]:
    """app -> its Deployment, found by the module its container runs."""
    out = {}
    for d in of_kind(docs, "Deployment"):
        (container,) = d["spec"]["template"]["spec"]["containers"]
        match container.get("command"):
            case ["python", "-m", module] if module.startswith("services."):
                out[module.removeprefix("services.")] = d
    return out


def containers(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                yield f"{d['kind']}/{d['metadata']['name']}", c


def pod_labels(deployment: Doc) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A label selector with matchLabels only (what these manifests use)."""
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


# --------------------------------------------------------------------------- every service, two replicas


def check_compose_services(compose: Doc) -> Problems:
    problems, apps = [], compose_apps(compose)
    for app in APPS:
        if (service := apps.get(app)) is None:
            problems.append(f"compose: {app} missing")
            continue
        if service.get("deploy", {}).get("replicas", 1) < 2:
            problems.append(f"compose: {app} has fewer than 2 replicas")
        if service.get("ports"):
            problems.append(f"compose: {app} publishes a port (two replicas cannot; the load balancer does)")
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        if f"127.0.0.1:{port(app)}{READY_PATH}" not in test:
            problems.append(f"compose: {app} healthcheck does not ask {READY_PATH} on {port(app)}")
        if service.get("build", {}).get("dockerfile") != "deploy/Dockerfile":
            problems.append(f"compose: {app} is not built from deploy/Dockerfile")
        if service.get("depends_on", {}).get("access-init") != {
            "condition": "service_completed_successfully"
        }:
            problems.append(f"compose: {app} starts before access-init made its users")
    return problems


def test_every_service_runs_twice_in_compose_and_probes_its_readyz(compose: Doc) -> None:
    assert {"booking", "scheduler", "notifier", "audit"} <= set(APPS)
    broken = copy.deepcopy(compose)
    broken["services"]["notifier"]["deploy"]["replicas"] = 1
    broken["services"]["audit"]["healthcheck"]["test"][-1] = "urlopen('http://127.0.0.1:8004/healthz')"
    del broken["services"]["scheduler"]
    assert_check(check_compose_services, compose, broken, "notifier has fewer than 2 replicas")
    assert any("audit healthcheck" in p for p in check_compose_services(broken))
    assert "compose: scheduler missing" in check_compose_services(broken)


def resolve_port(container: Doc, port_ref: int | str) -> int | None:
    if isinstance(port_ref, int):
        return port_ref
    named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    return named.get(port_ref)


def check_deployments(docs: list[Doc]) -> Problems:
    problems, deps = [], deployments(docs)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    services = of_kind(docs, "Service")
    for app in APPS:
        if (d := deps.get(app)) is None:
            problems.append(f"k8s: no Deployment runs services.{app}")
            continue
        spec = d["spec"]
        (c,) = spec["template"]["spec"]["containers"]
        if spec.get("replicas", 1) < 2:
            problems.append(f"k8s: {app} has fewer than 2 replicas")
        if [p["containerPort"] for p in c.get("ports", [])] != [port(app)]:
            problems.append(f"k8s: {app} does not listen on its port {port(app)}")
        for probe, path in (("readinessProbe", READY_PATH), ("livenessProbe", HEALTH_PATH)):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or resolve_port(c, get.get("port", "")) != port(app):
                problems.append(f"k8s: {app} {probe} is not GET {path} on {port(app)}")
        if (startup := c.get("startupProbe")) and startup["httpGet"]["path"] != HEALTH_PATH:
            problems.append(f"k8s: {app} startupProbe is not {HEALTH_PATH}")
        requests = c.get("resources", {}).get("requests", {})
        if not {"cpu", "memory"} <= set(requests):
            problems.append(f"k8s: {app} has no cpu and memory requests")
        labels = pod_labels(d)
        budgets = [b for b in pdbs if selects(b["spec"]["selector"], labels)]
        if not any(b["spec"].get("minAvailable", 0) >= 1 for b in budgets):
            problems.append(f"k8s: {app} has no PodDisruptionBudget keeping one replica up")
        if not any(
            selects({"matchLabels": s["spec"]["selector"]}, labels)
            and [p["port"] for p in s["spec"]["ports"]] == [port(app)]
            for s in services
        ):
            problems.append(f"k8s: {app} has no Service on {port(app)}")
        pod_security = spec["template"]["spec"].get("securityContext", {})
        if not pod_security.get("runAsNonRoot") or c.get("securityContext", {}).get(
            "allowPrivilegeEscalation"
        ):
            problems.append(f"k8s: {app} may run as root or escalate")
    return problems


def test_every_service_is_a_deployment_of_two_with_probes_requests_and_a_budget(manifests: list[Doc]) -> None:
    broken = copy.deepcopy(manifests)
    deps = deployments(broken)
    deps["booking"]["spec"]["replicas"] = 1
    (c,) = deps["audit"]["spec"]["template"]["spec"]["containers"]
    c["readinessProbe"]["httpGet"]["path"] = HEALTH_PATH  # alive is not ready
    (c,) = deps["notifier"]["spec"]["template"]["spec"]["containers"]
    del c["resources"]["requests"]
    broken = [
        d for d in broken if not (d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "scheduler")
    ]
    assert_check(check_deployments, manifests, broken, "booking has fewer than 2 replicas")
    found = check_deployments(broken)
    assert f"k8s: audit readinessProbe is not GET {READY_PATH} on {port('audit')}" in found
    assert "k8s: notifier has no cpu and memory requests" in found
    assert "k8s: scheduler has no PodDisruptionBudget keeping one replica up" in found


def check_kustomization(listed: list[str]) -> Problems:
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    missing = [f"k8s: {name} listed but not there" for name in listed if not (K8S / name).is_file()]
    return missing + [f"k8s: {name} not listed in kustomization.yaml" for name in sorted(files - set(listed))]


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    broken = [name for name in listed if name != "networkpolicies.yaml"] + ["gone.yaml"]
    assert_check(check_kustomization, listed, broken, "networkpolicies.yaml not listed")
    assert "k8s: gone.yaml listed but not there" in check_kustomization(broken)


# --------------------------------------------------------------------------- no secret inline


def compose_url(value: str) -> SplitResult:
    """A URL of the compose file with its variables put by words, so that it parses as deployed."""
    return urlsplit(ANY_COMPOSE_REF.sub(lambda m: REQUIRED if COMPOSE_REF.fullmatch(m[0]) else OTHER, value))


def compose_secret_problems(where: str, name: str, value: Any) -> Problems:
    value = str(value)
    if secret_name(name) and not COMPOSE_REF.fullmatch(value):
        return [f"{where}: {name} is not a required ${{VARIABLE:?}} (inline or with a default)"]
    password = compose_url(value).password if "://" in value else None
    if password is not None and password != REQUIRED:
        return [f"{where}: {name} has a password inline"]
    return []


def check_compose_secrets(compose: Doc) -> Problems:
    problems = []
    for svc, service in compose["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{svc}: use the mapping form of environment"
        for name, value in env.items():
            problems += compose_secret_problems(f"compose: {svc}", name, value)
    for name, secret in compose.get("secrets", {}).items():
        if set(secret) != {"file"}:
            problems.append(f"compose: secret {name} is not read from a file")
    return problems


def test_compose_has_no_secret_inline(compose: Doc) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["booking"]["environment"]["SECRET_KEY"] = "s3cret-in-the-file"
    broken["services"]["audit"]["environment"]["AUDIT_CHAIN_KEY"] = "${AUDIT_CHAIN_KEY:-dev}"
    env = broken["services"]["notifier"]["environment"]
    env["AMQP_URL"] = "amqp://notifier:hunter2@haproxy:5672/"
    broken["secrets"]["erlang_cookie"] = {"environment": "COOKIE"}
    assert_check(check_compose_secrets, compose, broken, "booking: SECRET_KEY is not a required")
    found = check_compose_secrets(broken)
    assert any("audit: AUDIT_CHAIN_KEY" in p for p in found)
    assert "compose: notifier: AMQP_URL has a password inline" in found
    assert "compose: secret erlang_cookie is not read from a file" in found


def check_k8s_secrets(docs: list[Doc]) -> Problems:
    problems = []
    for doc in docs:
        if doc["kind"] == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"k8s: Secret {doc['metadata']['name']} holds values in the manifests")
        if doc["kind"] == "ConfigMap":
            problems += [
                f"k8s: ConfigMap {doc['metadata']['name']} holds {k}"
                for k in doc.get("data", {})
                if secret_name(k)
            ]
    for where, c in containers(docs):
        from_secret = set()
        for var in c.get("env", []):
            name, ref = var["name"], var.get("valueFrom", {})
            if "secretKeyRef" in ref:
                from_secret.add(name)
            elif secret_name(name):
                problems.append(f"k8s: {where}: {name} does not come from a Secret")
            value = str(var.get("value", ""))
            password = urlsplit(value).password if "://" in value else None
            if password is not None and (not (m := K8S_REF.fullmatch(password)) or m[1] not in from_secret):
                problems.append(f"k8s: {where}: {name} has a password that is not from a Secret")
    return problems


def test_kubernetes_manifests_have_no_secret_inline(manifests: list[Doc]) -> None:
    broken = copy.deepcopy(manifests)
    (c,) = deployments(broken)["booking"]["spec"]["template"]["spec"]["containers"]
    for var in c["env"]:
        if var["name"] == "PII_KEYS":
            var.pop("valueFrom")
            var["value"] = '{"k1": "c2VjcmV0"}'
        if var["name"] == "AMQP_URL":
            var["value"] = "amqp://booking:hunter2@$(AMQP_HOST)/"
    broken.append({"kind": "Secret", "metadata": {"name": "leaked"}, "stringData": {"SECRET_KEY": "x"}})
    assert_check(check_k8s_secrets, manifests, broken, "booking: PII_KEYS does not come from a Secret")
    found = check_k8s_secrets(broken)
    assert "k8s: Deployment/booking: AMQP_URL has a password that is not from a Secret" in found
    assert "k8s: Secret leaked holds values in the manifests" in found


def check_not_secret(excused: frozenset[str]) -> Problems:
    """A name is excused from the secret checks only if the setting it sets cannot hold text."""
    fields = {n.upper(): f.annotation for app in APPS for n, f in settings_cls(app).model_fields.items()}
    problems = []
    for name in sorted(excused):
        if name not in fields:
            problems.append(f"{name} sets no setting of any service")
        elif {str, SecretStr} & {fields[name], *get_args(fields[name])}:
            problems.append(f"{name} sets a text setting: it may hold a secret")
    return problems


def test_the_names_excused_from_secrets_hold_no_text() -> None:
    broken = NOT_SECRET | {"CONSOLE_AUDIT_KEY", "SECRET_DIR"}
    assert_check(check_not_secret, NOT_SECRET, broken, "CONSOLE_AUDIT_KEY sets a text setting")
    assert "SECRET_DIR sets no setting of any service" in check_not_secret(broken)


# --------------------------------------------------------------------------- RabbitMQ: cluster, quorum 3


def conf(path: Path) -> dict[str, str]:
    """rabbitmq.conf (sysctl format) as key -> value."""
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def rabbit_nodes(compose: Doc) -> dict[str, Doc]:
    return {name: s for name, s in compose["services"].items() if s.get("command") == ["rabbitmq-server"]}


def check_quorum(given: tuple[dict[str, Doc], dict[str, str], str]) -> Problems:
    queues, settings, advanced = given
    problems = []
    for name, q in queues.items():
        args = q["arguments"]
        if args.get("x-queue-type") != "quorum":
            problems.append(f"{name} is not a quorum queue")
        if args.get("x-quorum-initial-group-size", 3) != 3:
            problems.append(f"{name} declares a group size other than 3")
    if not re.search(r"\{\s*quorum_cluster_size\s*,\s*3\s*\}", advanced):
        problems.append("advanced.config does not set rabbit.quorum_cluster_size to 3")
    reconciliation = "quorum_queue.continuous_membership_reconciliation"
    if (
        settings.get(f"{reconciliation}.enabled") != "true"
        or settings.get(f"{reconciliation}.target_group_size") != "3"
    ):
        problems.append("cluster.conf does not grow quorum queues back to 3 members")
    return problems


def test_quorum_queues_get_three_members(compose: Doc) -> None:
    queues = {
        name: q
        for service in topology.SERVICES.values()
        for name, q in rabbitmq_users.record(service).queues.items()
    }
    settings = conf(CLUSTER / "rabbitmq" / "cluster.conf")
    advanced = (CLUSTER / "rabbitmq" / "advanced.config").read_text()
    real = (queues, settings, advanced)
    queues_1 = copy.deepcopy(queues)
    queues_1["booking.inbox"]["arguments"]["x-quorum-initial-group-size"] = 1
    settings_2 = {**settings, "quorum_queue.continuous_membership_reconciliation.target_group_size": "2"}
    broken = (queues_1, settings_2, advanced.replace("3", "1"))
    assert_check(check_quorum, real, broken, "booking.inbox declares a group size other than 3")
    found = check_quorum(broken)
    assert "advanced.config does not set rabbit.quorum_cluster_size to 3" in found
    assert "cluster.conf does not grow quorum queues back to 3 members" in found


def check_rabbit_cluster(compose: Doc) -> Problems:
    problems, nodes = [], rabbit_nodes(compose)
    settings = conf(CLUSTER / "rabbitmq" / "cluster.conf")
    listed = {v for k, v in settings.items() if k.startswith("cluster_formation.classic_config.nodes.")}
    if settings.get("cluster_formation.peer_discovery_backend") != "classic_config":
        problems.append("cluster.conf: peer discovery is not by configuration")
    if len(nodes) != 3 or listed != {f"rabbit@{n['hostname']}" for n in nodes.values()}:
        problems.append(
            f"the classic_config nodes {sorted(listed)} are not the compose nodes {sorted(nodes)}"
        )
    for name, node in nodes.items():
        if "erlang_cookie" not in node.get("secrets", []):
            problems.append(f"{name} does not get the Erlang cookie secret")
        if "/run/secrets/erlang_cookie /var/lib/rabbitmq/.erlang.cookie" not in " ".join(node["entrypoint"]):
            problems.append(f"{name} does not install the cookie where the node reads it")
        mounts = {v.split(":")[1] for v in node["volumes"] if v.startswith("./")}
        if not {"/etc/rabbitmq/conf.d/30-cluster.conf", "/etc/rabbitmq/advanced.config"} <= mounts:
            problems.append(f"{name} does not load the cluster configuration")
    return problems


def test_rabbitmq_nodes_find_each_other_by_configuration_with_one_cookie(compose: Doc) -> None:
    broken = copy.deepcopy(compose)
    del broken["services"]["rabbitmq-3"]
    broken["services"]["rabbitmq-2"]["secrets"] = []
    assert_check(check_rabbit_cluster, compose, broken, "are not the compose nodes")
    assert "rabbitmq-2 does not get the Erlang cookie secret" in check_rabbit_cluster(broken)


# --------------------------------------------------------------------------- HAProxy


def haproxy_sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            current = sections.setdefault(line.strip(), [])
        else:
            current.append(" ".join(line.split()))
    return sections


def check_haproxy(given: tuple[str, Doc]) -> Problems:
    text, compose = given
    sections, problems = haproxy_sections(text), []
    rabbit = sections.get("backend rabbitmq", [])
    servers = {line.split()[2] for line in rabbit if line.startswith("server ") and line.endswith(" check")}
    if servers != {f"{n['hostname']}:5672" for n in rabbit_nodes(compose).values()}:
        problems.append(f"backend rabbitmq checks {sorted(servers)}, not the three nodes")
    header = b"AMQP\x00\x00\x09\x01".hex()
    if f"tcp-check send-binary {header}" not in rabbit:
        problems.append("backend rabbitmq does not check the nodes with the AMQP handshake")
    published = {str(p) for p in compose["services"]["haproxy"].get("ports", [])}
    for app in BALANCED:
        if f"bind :{port(app)}" not in sections.get(f"frontend {app}", []):
            problems.append(f"frontend {app} does not listen on {app}'s port")
        if (f"127.0.0.1:{port(app)}:{port(app)}" in published) != (app in PUBLIC):
            problems.append(f"{app} is {'not ' if app in PUBLIC else ''}published by the load balancer")
        backend = sections.get(f"backend {app}", [])
        if f"http-check send meth GET uri {READY_PATH}" not in backend:
            problems.append(f"backend {app} does not check {READY_PATH}")
        replicas = compose_apps(compose)[app]["deploy"]["replicas"]
        template = [line.split() for line in backend if line.startswith("server-template ")]
        if not template or int(template[0][2]) < replicas or template[0][3] != f"{app}:{port(app)}":
            problems.append(f"backend {app} has no slot for every replica")
    for app, service in compose_apps(compose).items():
        amqp = compose_url(service["environment"]["AMQP_URL"])
        if (amqp.hostname, amqp.port) != ("haproxy", 5672):
            problems.append(f"{app} does not reach the broker through the load balancer")
    return problems


def test_haproxy_balances_the_three_nodes_and_the_http_services_ready_replicas(compose: Doc) -> None:
    text = (CLUSTER / "haproxy" / "haproxy.cfg").read_text()
    broken_text = text.replace("server rabbitmq-3 rabbitmq-3:5672 check\n", "").replace(
        READY_PATH, HEALTH_PATH
    )
    broken_text = broken_text.replace(
        "server-template console- 4 console:8005", "server console console:8005"
    )
    broken = copy.deepcopy(compose)
    broken["services"]["audit"]["environment"]["AMQP_URL"] = "amqp://audit:${P:?}@rabbitmq-1:5672/"
    broken["services"]["haproxy"]["ports"].append("127.0.0.1:8004:8004")
    assert_check(check_haproxy, (text, compose), (broken_text, broken), "not the three nodes")
    found = check_haproxy((broken_text, broken))
    assert f"backend booking does not check {READY_PATH}" in found
    assert f"backend scheduler does not check {READY_PATH}" in found
    assert "backend console has no slot for every replica" in found
    assert "audit is published by the load balancer" in found
    assert "audit does not reach the broker through the load balancer" in found


def test_haproxy_accepts_its_configuration() -> None:
    """`haproxy -c` with the haproxy on the PATH or Debian's that `make haproxy-binary` unpacked (the
    servers' names do not resolve here, which it reports as warnings: they are found through Docker's
    DNS at run time). Skipped without one, except in CI, where it fails."""
    binary = local.unpacked("haproxy")
    if binary is None:
        missing_tool("haproxy", "haproxy-binary")
    cfg = CLUSTER / "haproxy" / "haproxy.cfg"
    ok = subprocess.run([binary, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    bad = cfg.read_text().replace("tcp-check expect binary", "tcp-check expects binary")
    broken = subprocess.run(
        [binary, "-c", "-q", "-f", "/dev/stdin"], input=bad, capture_output=True, text=True, check=False
    )
    assert broken.returncode != 0


# --------------------------------------------------------------------------- MongoDB: replica set, URLs


def expand_k8s(value: str, env: dict[str, str]) -> str:
    return K8S_REF.sub(lambda m: env[m[1]], value)


def mongodb_urls(compose: Doc, docs: list[Doc]) -> dict[str, str]:
    """Every MONGODB_URL (and the init step's admin URL) with its variables filled in as deployed."""
    urls = {}
    for svc, service in compose["services"].items():
        for name in ("MONGODB_URL", "MONGO_ADMIN_URL"):
            if name in service.get("environment", {}):
                urls[f"compose {svc} {name}"] = compose_url(service["environment"][name]).geturl()
    config = {k: v for d in of_kind(docs, "ConfigMap") for k, v in d.get("data", {}).items()}
    for where, c in containers(docs):
        env: dict[str, str] = {}
        for var in c.get("env", []):
            ref = var.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                env[var["name"]] = config[ref["configMapKeyRef"]["key"]]
            elif "secretKeyRef" in ref:
                env[var["name"]] = "pw"
            else:
                env[var["name"]] = expand_k8s(str(var["value"]), env)
        if "MONGODB_URL" in env:
            urls[f"k8s {where}"] = env["MONGODB_URL"]
    return urls


def check_mongodb_urls(urls: dict[str, str]) -> Problems:
    """Production settings by URL (deploy/README.md): majority writes, retried, reads from the primary;
    checked as the services' own client reads the URL, and written out in the URL itself."""
    problems = []
    for where, url in urls.items():
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        client = connect(url, app_name="check")
        if client.write_concern.document.get("w") != "majority" or query.get("w") != "majority":
            problems.append(f"{where}: writes are not w=majority")
        if not client.options.retry_writes or query.get("retryWrites") != "true":
            problems.append(f"{where}: writes are not retried (retryWrites=true)")
        if client.read_preference != ReadPreference.PRIMARY or query.get("readPreference") != "primary":
            problems.append(f"{where}: reads are not readPreference=primary")
        if not client.options.replica_set_name or len(urlsplit(url).netloc.split(",")) != 3:
            problems.append(f"{where}: not the three members of a replica set")
        if query.get("authSource") != mongo_users.AUTH_DB:
            problems.append(f"{where}: users are not looked up in {mongo_users.AUTH_DB}")
    return problems


def test_mongodb_urls_carry_the_production_settings(compose: Doc, manifests: list[Doc]) -> None:
    urls = mongodb_urls(compose, manifests)
    assert {f"compose {a} MONGODB_URL" for a in APPS} | {f"k8s Deployment/{a}" for a in APPS} <= set(urls)
    broken = dict(urls)
    broken["compose booking MONGODB_URL"] = urls["compose booking MONGODB_URL"].replace("w=majority", "w=1")
    key = "k8s Deployment/scheduler"
    broken[key] = urls[key].replace("readPreference=primary", "readPreference=secondaryPreferred")
    broken["compose audit MONGODB_URL"] = urls["compose audit MONGODB_URL"].replace("&retryWrites=true", "")
    assert_check(check_mongodb_urls, urls, broken, "compose booking MONGODB_URL: writes are not w=majority")
    found = check_mongodb_urls(broken)
    assert f"{key}: reads are not readPreference=primary" in found
    assert "compose audit MONGODB_URL: writes are not retried (retryWrites=true)" in found


def check_replica_set(compose: Doc) -> Problems:
    problems = []
    members = {n: s for n, s in compose["services"].items() if (s.get("command") or [None])[0] == "mongod"}
    script = (CLUSTER / "mongo" / "init-replica-set.js").read_text()
    listed = re.search(r"const MEMBERS = \[(.*?)\]", script)
    hosts = set(re.findall(r'"([^"]+)"', listed[1])) if listed else set()
    if len(members) != 3 or hosts != {f"{s['hostname']}:27017" for s in members.values()}:
        problems.append(
            f"rs.initiate's members {sorted(hosts)} are not the compose members {sorted(members)}"
        )
    set_name = re.search(r'const SET = "(\w+)"', script)
    for name, member in members.items():
        command = member["command"]
        if set_name is None or command[command.index("--replSet") + 1] != set_name[1]:
            problems.append(f"{name} is not started as a member of the set rs.initiate makes")
        if "--keyFile" not in command or "mongo_keyfile" not in member.get("secrets", []):
            problems.append(f"{name} does not authenticate the other members by the key file secret")
    init = compose["services"].get("mongo-init", {})
    first = sorted(members)[0] if members else None
    if init.get("network_mode") != f"service:{first}" or "init-replica-set.js" not in " ".join(
        init.get("entrypoint", [])
    ):
        problems.append("mongo-init does not run the init script on the first member's loopback")
    return problems


def test_mongodb_is_a_replica_set_of_three_initiated_once(compose: Doc) -> None:
    broken = copy.deepcopy(compose)
    del broken["services"]["mongo-3"]
    broken["services"]["mongo-2"]["command"] = ["mongod", "--replSet", "other", "--bind_ip_all"]
    broken["services"]["mongo-init"]["network_mode"] = "bridge"
    assert_check(check_replica_set, compose, broken, "are not the compose members")
    found = check_replica_set(broken)
    assert "mongo-2 is not started as a member of the set rs.initiate makes" in found
    assert "mongo-init does not run the init script on the first member's loopback" in found


# --------------------------------------------------------------------------- the scheduler's lease


def check_one_timer_wheel(given: tuple[Doc, list[Doc]]) -> Problems:
    """Two scheduler replicas are safe because each takes the lease (leases/timers in MongoDB) under
    its own holder name, REPLICA_ID, by default host:port; one fixed REPLICA_ID for both replicas
    would make both the holder, and both would fire every timer wheel tick."""
    compose, docs = given
    problems = []
    field = "replica_id"
    assert field in SchedulerSettings.model_fields and not SchedulerSettings.model_fields[field].default
    scheduler = compose_apps(compose)["scheduler"]
    if field.upper() in scheduler.get("environment", {}):
        problems.append("compose: every scheduler replica would hold the lease under one REPLICA_ID")
    (c,) = deployments(docs)["scheduler"]["spec"]["template"]["spec"]["containers"]
    for var in c.get("env", []):
        if var["name"] == field.upper() and "fieldRef" not in var.get("valueFrom", {}):
            problems.append("k8s: every scheduler replica would hold the lease under one REPLICA_ID")
    return problems


def test_scheduler_replicas_each_ask_for_the_lease_as_themselves(compose: Doc, manifests: list[Doc]) -> None:
    broken_compose = copy.deepcopy(compose)
    broken_compose["services"]["scheduler"]["environment"]["REPLICA_ID"] = "scheduler"
    broken = copy.deepcopy(manifests)
    (c,) = deployments(broken)["scheduler"]["spec"]["template"]["spec"]["containers"]
    c["env"].append({"name": "REPLICA_ID", "value": "scheduler"})
    assert_check(check_one_timer_wheel, (compose, manifests), (broken_compose, broken), "compose: every")
    assert "k8s: every scheduler replica would hold the lease under one REPLICA_ID" in check_one_timer_wheel(
        (compose, broken)
    )


# --------------------------------------------------------------------------- NetworkPolicies


def policies(docs: list[Doc]) -> list[Doc]:
    return of_kind(docs, "NetworkPolicy")


def egress_ports(docs: list[Doc], labels: dict[str, str]) -> set[int]:
    return {
        p["port"]
        for np in policies(docs)
        if "Egress" in np["spec"]["policyTypes"] and selects(np["spec"]["podSelector"], labels)
        for rule in np["spec"].get("egress", [])
        for p in rule.get("ports", [])
    }


def peers(docs: list[Doc], labels: dict[str, str], way: str = "Ingress") -> list[tuple[Doc, set[int]]]:
    """Each peer the policies admit these pods to be reached from (Ingress) or to reach (Egress), with
    the ports of its rule."""
    side = "from" if way == "Ingress" else "to"
    return [
        (peer, {p["port"] for p in rule.get("ports", [])})
        for np in policies(docs)
        if way in np["spec"]["policyTypes"] and selects(np["spec"]["podSelector"], labels)
        for rule in np["spec"].get(way.lower(), [])
        for peer in rule.get(side, [])
    ]


def ingress_from(docs: list[Doc], labels: dict[str, str]) -> list[tuple[Doc, set[int]]]:
    return peers(docs, labels, "Ingress")


def check_network_policies(docs: list[Doc]) -> Problems:
    problems = []
    if not any(
        np["spec"]["podSelector"] == {}
        and set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not np["spec"].get("ingress")
        and not np["spec"].get("egress")
        for np in policies(docs)
    ):
        problems.append("no default-deny policy: anything may talk to anything")
    for app, d in deployments(docs).items():
        labels = pod_labels(d)
        out = egress_ports(docs, labels)
        if not {5672, 27017, 53} <= out:
            problems.append(f"{app} may not reach RabbitMQ, MongoDB and DNS")
        if (app == "notifier") != bool(out & (SMTP_PORTS | {25})):
            problems.append(f"{app}: only the notifier reaches SMTP")
        if (app == "scheduler") != (443 in out):
            problems.append(f"{app}: only the scheduler reaches HTTPS (Microsoft Graph)")
        admitted = ingress_from(docs, labels)
        outside = [
            ports for peer, ports in admitted if "namespaceSelector" in peer and "monitoring" not in str(peer)
        ]
        if (app in PUBLIC) != bool(outside) or any(ports != {port(app)} for ports in outside):
            problems.append(
                f"{app}: reached from outside the namespace"
                if app not in PUBLIC
                else f"{app}: not reached by the ingress controller on {port(app)}"
            )
        if not any("monitoring" in str(peer) and port(app) in ports for peer, ports in admitted):
            problems.append(f"{app}: Prometheus may not scrape {port(app)}")
    if (
        "notifier" in deployments(docs)
        and not egress_ports(docs, pod_labels(deployments(docs)["notifier"])) >= SMTP_PORTS
    ):
        problems.append("notifier may not reach SMTP on 465 and 587")
    for ing in of_kind(docs, "Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                if (target := path["backend"]["service"]["name"]) not in PUBLIC:
                    problems.append(f"Ingress {ing['metadata']['name']} routes to {target}")
    return problems


def test_network_policies_limit_who_talks_to_whom(manifests: list[Doc]) -> None:
    assert set(deployments(manifests)) == set(APPS)
    broken = copy.deepcopy(manifests)
    for np in policies(broken):
        if np["metadata"]["name"] == "ingress-to-booking":
            np["spec"]["podSelector"] = {"matchLabels": {"app.kubernetes.io/component": "service"}}
        if np["metadata"]["name"] == "notifier-to-smtp":
            np["spec"]["podSelector"] = {"matchLabels": {"app.kubernetes.io/component": "service"}}
    broken = [d for d in broken if d["metadata"]["name"] != "default-deny"]
    (ing,) = [i for i in of_kind(broken, "Ingress") if i["metadata"]["name"] == "booking"]
    ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "audit"
    assert_check(check_network_policies, manifests, broken, "no default-deny policy")
    found = check_network_policies(broken)
    assert "audit: reached from outside the namespace" in found
    assert "booking: only the notifier reaches SMTP" in found
    assert "Ingress booking routes to audit" in found


# --------------------------------------------------------------------------- the console's calls


def in_namespace_peer(peer: Doc, labels: dict[str, str]) -> bool:
    """A peer of this namespace (no namespaceSelector, no ipBlock) whose pods have these labels."""
    return set(peer) == {"podSelector"} and selects(peer["podSelector"], labels)


def check_console_calls(given: tuple[Doc, str, list[Doc]]) -> Problems:
    """The console reaches each service it calls (its `<SERVICE>_URL`): in compose through HAProxy's
    frontend for that service (its ready replicas only); on Kubernetes through the service's Service,
    with the console's egress and the service's ingress both admitting it on the service's port."""
    compose, haproxy_text, docs = given
    problems, sections = [], haproxy_sections(haproxy_text)
    env = compose_apps(compose)["console"]["environment"]
    for app in CALLED:
        url = urlsplit(env.get(f"{app.upper()}_URL", ""))
        frontend = sections.get(f"frontend {app}", [])
        if (url.hostname, url.port) != ("haproxy", port(app)) or f"default_backend {app}" not in frontend:
            problems.append(f"compose: the console does not call {app} through the load balancer")
    deps = deployments(docs)
    (c,) = deps["console"]["spec"]["template"]["spec"]["containers"]
    values = {v["name"]: str(v.get("value", "")) for v in c["env"]}
    console = pod_labels(deps["console"])
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    for app in CALLED:
        url, labels = urlsplit(values.get(f"{app.upper()}_URL", "")), pod_labels(deps[app])
        service = services.get(url.hostname or "")
        if (
            service is None
            or not selects({"matchLabels": service["spec"]["selector"]}, labels)
            or url.port != port(app)
            or url.port not in [p["port"] for p in service["spec"]["ports"]]
        ):
            problems.append(f"k8s: the console's {app.upper()}_URL is not {app}'s Service on {port(app)}")
        if not any(
            in_namespace_peer(peer, labels) and port(app) in ports
            for peer, ports in peers(docs, console, "Egress")
        ):
            problems.append(f"k8s: the console may not reach {app} on {port(app)}")
        if not any(
            in_namespace_peer(peer, console) and port(app) in ports
            for peer, ports in ingress_from(docs, labels)
        ):
            problems.append(f"k8s: {app} does not admit the console on {port(app)}")
    return problems


def test_the_console_calls_booking_scheduler_and_audit_at_their_ready_replicas(
    compose: Doc, manifests: list[Doc]
) -> None:
    assert set(CALLED) == {"booking", "scheduler", "notifier", "audit"}
    text = (CLUSTER / "haproxy" / "haproxy.cfg").read_text()
    broken_compose = copy.deepcopy(compose)
    broken_compose["services"]["console"]["environment"]["SCHEDULER_URL"] = "http://scheduler:8002"
    broken = [copy.deepcopy(d) for d in manifests if d["metadata"]["name"] != "audit-from-console"]
    (c,) = deployments(broken)["console"]["spec"]["template"]["spec"]["containers"]
    next(v for v in c["env"] if v["name"] == "BOOKING_URL")["value"] = "http://booking:8002"
    for np in policies(broken):
        if np["metadata"]["name"] == "console-to-services":
            np["spec"]["egress"] = [r for r in np["spec"]["egress"] if r["ports"][0]["port"] != 8002]
    real, wrong = (compose, text, manifests), (broken_compose, text, broken)
    assert_check(check_console_calls, real, wrong, "compose: the console does not call scheduler through")
    found = check_console_calls(wrong)
    assert "k8s: the console's BOOKING_URL is not booking's Service on 8001" in found
    assert "k8s: the console may not reach scheduler on 8002" in found
    assert "k8s: audit does not admit the console on 8004" in found


# --------------------------------------------------------------------------- R12: each its own user


def check_own_users(given: tuple[Doc, list[Doc]]) -> Problems:
    """Every replica logs in to RabbitMQ and MongoDB as its service's own user (deploy/SECURITY.md)."""
    compose, docs = given
    problems = []
    for app, service in compose_apps(compose).items():
        env = service["environment"]
        for name in ("AMQP_URL", "MONGODB_URL"):
            if compose_url(env[name]).username != app:
                problems.append(f"compose: {app} {name} is not the user {app}")
    for app, d in deployments(docs).items():
        (c,) = d["spec"]["template"]["spec"]["containers"]
        values = {v["name"]: v.get("value", "") for v in c["env"]}
        secrets = {
            v["valueFrom"]["secretKeyRef"]["name"]
            for v in c["env"]
            if "secretKeyRef" in v.get("valueFrom", {})
        }
        for name in ("AMQP_URL", "MONGODB_URL"):
            if urlsplit(values.get(name, "")).username != app:
                problems.append(f"k8s: {app} {name} is not the user {app}")
        if secrets != {f"consult-{app}"}:
            problems.append(f"k8s: {app} reads the Secrets {sorted(secrets)}, not its own alone")
    return problems


def test_r12_each_replica_logs_in_as_its_own_service(compose: Doc, manifests: list[Doc]) -> None:
    broken_compose = copy.deepcopy(compose)
    env = broken_compose["services"]["notifier"]["environment"]
    env["MONGODB_URL"] = env["MONGODB_URL"].replace("mongodb://notifier:", "mongodb://booking:")
    broken = copy.deepcopy(manifests)
    (c,) = deployments(broken)["audit"]["spec"]["template"]["spec"]["containers"]
    c["env"][-3]["valueFrom"]["secretKeyRef"]["name"] = "consult-booking"
    assert_check(check_own_users, (compose, manifests), (broken_compose, broken), "notifier MONGODB_URL")
    assert any("audit reads the Secrets" in p for p in check_own_users((compose, broken)))


def check_access_init(compose: Doc) -> Problems:
    """access-init is given every service's (and ops') broker and database password: `apply
    --from-env` stops at the first one missing, and no service user is made."""
    env = compose["services"]["access-init"]["environment"]
    wanted = [rabbitmq_users.env_name(r) for r in rabbitmq_users.roles()]
    wanted += [mongo_users.env_name(r) for r in mongo_users.roles()]
    return [f"compose: access-init is not given {name}" for name in wanted if name not in env]


def test_r12_access_init_makes_every_services_users(compose: Doc) -> None:
    assert "console" in topology.SERVICES
    broken = copy.deepcopy(compose)
    del broken["services"]["access-init"]["environment"]["RABBITMQ_CONSOLE_PASSWORD"]
    assert_check(check_access_init, compose, broken, "access-init is not given RABBITMQ_CONSOLE_PASSWORD")
