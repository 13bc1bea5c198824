"""docker-compose.yml and deploy/Dockerfile agree with the code (no Docker engine needed)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shared.settings import PLACEHOLDER_SECRETS, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
#: every service the repository runs (`python -m services.<name>`), the console too
APPS = tuple(sorted(p.parent.name for p in (ROOT / "services").glob("*/__main__.py")))
#: who sends no email, so is not given the mail server (the console is a client of the services' HTTP)
NO_SMTP = {"console"}
SERVERS = ("rabbitmq", "mongo", "mailpit")
#: What the servers publish: the addresses deploy/local.py and the tests use (USE_DOCKER=1 mode).
SERVER_PORTS = {"rabbitmq": {5672, 15672}, "mongo": {27017}, "mailpit": {1025, 8025}}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, from "[ip:]host:container" entries."""
    out = {}
    for entry in service.get("ports", []):
        *_, host, container = str(entry).split(":")
        out[int(container)] = int(host)
    return out


def settings_cls(app: str) -> type[ServiceSettings]:
    cls: type[ServiceSettings] = importlib.import_module(f"services.{app}.config").Settings
    return cls


def default_port(app: str) -> int:
    return int(settings_cls(app).model_fields["http_port"].default)


def test_every_server_and_service_is_there(compose: dict[str, Any]) -> None:
    assert set(services(compose)) >= {*SERVERS, *APPS}


def test_server_images_are_pinned(compose: dict[str, Any]) -> None:
    svc = services(compose)
    for name in SERVERS:
        _, _, tag = svc[name]["image"].partition(":")
        assert tag and tag != "latest", f"{name}: pin the image tag, got {svc[name]['image']!r}"
    assert svc["rabbitmq"]["image"].startswith("rabbitmq:3.") and "management" in svc["rabbitmq"]["image"]
    assert re.fullmatch(r"mongo:(7|8)\.\d+(\.\d+)?", svc["mongo"]["image"]), svc["mongo"]["image"]


def test_mailpit_image_is_the_version_the_local_wrapper_builds(compose: dict[str, Any]) -> None:
    go_mod = (ROOT / "deploy" / "mailpit" / "go.mod").read_text()
    version = re.search(r"github\.com/axllent/mailpit (v[\d.]+)", go_mod)
    assert version, "deploy/mailpit/go.mod pins no mailpit version"
    assert services(compose)["mailpit"]["image"] == f"axllent/mailpit:{version[1]}"


def test_servers_publish_the_local_addresses(compose: dict[str, Any]) -> None:
    svc = services(compose)
    for name, ports in SERVER_PORTS.items():
        assert published(svc[name]) == {p: p for p in ports}, name


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_server_healthchecks_ask_the_server_itself(compose: dict[str, Any]) -> None:
    svc = services(compose)
    assert svc["rabbitmq"]["healthcheck"]["test"][1:] == ["rabbitmq-diagnostics", "-q", "ping"]
    assert "ping" in " ".join(svc["mongo"]["healthcheck"]["test"])
    assert "readyz" in " ".join(svc["mailpit"]["healthcheck"]["test"])


@pytest.mark.parametrize("app", APPS)
def test_app_waits_for_healthy_servers(compose: dict[str, Any], app: str) -> None:
    depends = services(compose)[app]["depends_on"]
    assert isinstance(depends, dict), "use the long form: {server: {condition: service_healthy}}"
    for server in SERVERS:
        assert depends.get(server, {}).get("condition") == "service_healthy", f"{app} -> {server}"


@pytest.mark.parametrize("app", APPS)
def test_app_command_runs_an_existing_module(compose: dict[str, Any], app: str) -> None:
    command = services(compose)[app]["command"]
    assert command == ["python", "-m", f"services.{app}"]
    assert importlib.util.find_spec(f"services.{app}.__main__") is not None


@pytest.mark.parametrize("app", APPS)
def test_app_port_and_healthcheck_match_its_settings(compose: dict[str, Any], app: str) -> None:
    service, port = services(compose)[app], default_port(app)
    assert published(service) == {port: port}
    test = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in test
    assert "curl" not in test and "wget" not in test, "python:3.11-slim has neither"


@pytest.mark.parametrize("app", APPS)
def test_app_environment_names_real_settings_and_servers(compose: dict[str, Any], app: str) -> None:
    env = services(compose)[app]["environment"]
    fields = settings_cls(app).model_fields
    assert not [k for k in env if k.lower() not in fields], "a variable no Settings field reads"
    assert env["HTTP_HOST"] == "0.0.0.0"
    assert urlsplit(env["AMQP_URL"]).hostname == "rabbitmq"
    assert urlsplit(env["MONGODB_URL"]).hostname == "mongo"
    if app in NO_SMTP:
        assert "SMTP_URL" not in env
    else:
        assert urlsplit(env["SMTP_URL"]).hostname == "mailpit"


@pytest.mark.parametrize("app", APPS)
def test_secret_comes_from_the_environment_with_a_dev_default_prod_refuses(
    compose: dict[str, Any], app: str
) -> None:
    secret = services(compose)[app]["environment"]["SECRET_KEY"]
    match = re.fullmatch(r"\$\{SECRET_KEY:-([^}]*)\}", secret)
    assert match, f"SECRET_KEY must come from the environment, got {secret!r}"
    assert match[1] in PLACEHOLDER_SECRETS, "the default must be a placeholder that prod refuses"
    with pytest.raises(ValueError, match="SECRET_KEY"):
        ServiceSettings(environment="prod", secret_key=match[1], amqp_url="amqp://u:p@rabbitmq/")


@pytest.mark.parametrize("app", APPS)
def test_app_is_built_from_the_dockerfile(compose: dict[str, Any], app: str) -> None:
    build = services(compose)[app]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_dockerfile_installs_from_the_lock_as_non_root() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "uv.lock" in text and "uv sync --frozen --no-dev" in text
    uv_pin = re.search(r"uv==([\d.]+)", (ROOT / "Makefile").read_text())
    assert uv_pin and f"uv=={uv_pin[1]}" in text, "the image and the Makefile use the same uv"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0"), "the services must not run as root"
    for src in re.findall(r"^COPY\s+(?!--)(.+)\s+\S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"COPY {path}: not in the repository"


def test_the_image_serves_the_consoles_htmx_from_the_lockfile_without_dev_packages() -> None:
    """An npm stage installs package-lock.json exactly (no install script, no dev dependency: axe-core
    is for the browser tests) and only htmx's package goes into the image, where the console's
    NODE_MODULES setting looks by default (<repository root>/node_modules, the image's WORKDIR)."""
    from services.console.app import HTMX
    from services.console.config import Settings as ConsoleSettings

    text = (ROOT / "deploy" / "Dockerfile").read_text()
    package = json.loads((ROOT / "package.json").read_text())
    assert HTMX[0] in package["dependencies"] and "axe-core" in package["devDependencies"]
    stage = re.search(r"^FROM node:(\S+) AS (\w+)\n(.*?)^FROM ", text, re.M | re.S)
    assert stage, "no npm stage before the image"
    tag, name, steps = stage.groups()
    assert re.fullmatch(r"\d+\.\d+\.\d+-\w+-slim", tag), f"pin node's version, got {tag}"
    assert re.search(r"^COPY package\.json package-lock\.json \./$", steps, re.M)
    assert re.search(r"^RUN npm ci --ignore-scripts --omit=dev\b", steps, re.M)
    workdir = re.findall(r"^WORKDIR (\S+)", steps, re.M)[-1]
    final = text[stage.end() :]
    copied = re.findall(rf"^COPY --from={name} (\S+) (\S+)$", final, re.M)
    default = ConsoleSettings.model_fields["node_modules"].default.relative_to(ROOT)
    assert copied == [(f"{workdir}/node_modules/{HTMX[0]}", f"./{default}/{HTMX[0]}")], copied
    assert re.search(r"^COPY shared \./shared$", final, re.M), "the repository root (shared/..) is WORKDIR"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".local", ".env"} <= ignored
