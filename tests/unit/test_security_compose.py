"""deploy/compose.secure.yml gives each service its own broker and database user (R12)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from deploy import mongo_users, rabbitmq_users
from shared import topology

ROOT = Path(__file__).resolve().parents[2]
APPS = tuple(topology.SERVICES)


@pytest.fixture(scope="module")
def secure() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "deploy" / "compose.secure.yml").read_text())["services"])


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])


def _var(value: str) -> str:
    match = re.search(r"\$\{(\w+)", value)
    assert match, value
    return match[1]


def test_overrides_only_services_that_exist(secure: dict[str, Any], base: dict[str, Any]) -> None:
    assert set(secure) - {"access-init"} <= set(base)
    assert set(APPS) <= set(secure)


@pytest.mark.parametrize("app", APPS)
def test_r12_each_service_logs_in_as_itself(secure: dict[str, Any], app: str) -> None:
    env = secure[app]["environment"]
    amqp, mongo = urlsplit(env["AMQP_URL"]), urlsplit(env["MONGODB_URL"])
    assert (amqp.hostname, amqp.username) == ("rabbitmq", app)
    assert _var(env["AMQP_URL"]) == rabbitmq_users.env_name(app)
    assert (mongo.hostname, mongo.username) == ("mongo", app)
    assert _var(env["MONGODB_URL"]) == mongo_users.env_name(app)
    assert parse_qs(mongo.query)["authSource"] == [mongo_users.AUTH_DB]
    assert secure[app]["depends_on"] == {"access-init": {"condition": "service_completed_successfully"}}


def test_r12_init_step_sets_every_user_and_every_password_is_required(secure: dict[str, Any]) -> None:
    init = secure["access-init"]
    env = init["environment"]
    assert rabbitmq_users.PORTALS_ENV in env  # each portal its own broker user (issue 14)
    wanted = {rabbitmq_users.env_name(r) for r in rabbitmq_users.roles(["dev-portal"])}
    wanted |= {mongo_users.env_name(r) for r in mongo_users.roles()}
    assert wanted <= set(env)
    for value in env.values():
        assert re.search(r"\$\{\w+:\?", value), f"{value}: a password must not have a default"
    command = " ".join(init["command"])
    for module in ("deploy.rabbitmq_users", "deploy.mongo_users"):
        assert f"python -m {module} apply" in command
        assert importlib.util.find_spec(module) is not None
    assert {k: v["condition"] for k, v in init["depends_on"].items()} == {
        "rabbitmq": "service_healthy",
        "mongo": "service_healthy",
    }
    mongo_env = secure["mongo"]["environment"]
    assert ":?" in mongo_env["MONGO_INITDB_ROOT_USERNAME"] and ":?" in mongo_env["MONGO_INITDB_ROOT_PASSWORD"]
