"""MongoDB users for docker compose (R12): each service reaches only its own database."""

from __future__ import annotations

import pytest

from deploy import mongo_users
from shared import topology
from shared.settings import ServiceSettings


def test_r12_each_service_user_reads_and_writes_only_its_own_database() -> None:
    plan = mongo_users.plan()
    for svc in topology.SERVICES:
        db = ServiceSettings(db_prefix="").database(svc)
        assert plan[svc] == [{"role": "readWrite", "db": db}]
    assert {r["role"] for r in plan["ops"]} == {"read"}
    assert not any(
        r["db"] == "admin" or r["role"].endswith("AnyDatabase") for rs in plan.values() for r in rs
    )


def test_prefix_keeps_test_users_and_databases_apart() -> None:
    assert mongo_users.plan("t1_")["t1_booking"] == [{"role": "readWrite", "db": "t1_booking"}]


def test_service_url_authenticates_against_admin_and_keeps_tls_options() -> None:
    url = mongo_users.service_url("mongodb://root:x@mongo:27017/?tls=true&tlsCAFile=/ca.pem", "audit", "p@ss")
    assert url == "mongodb://audit:p%40ss@mongo:27017/?tls=true&tlsCAFile=/ca.pem&authSource=admin"


def test_missing_passwords_stop_the_init_step() -> None:
    env = {mongo_users.env_name(r): "pw" for r in mongo_users.roles() if r != "audit"}
    with pytest.raises(SystemExit, match="MONGO_AUDIT_PASSWORD"):
        mongo_users.env_passwords(env)
