"""The broker's users and permissions, derived from the topology (R12), without a broker."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
from pathlib import Path

from deploy import rabbitmq_users
from shared import topology

PORTALS = ("kg-portal", "hw-portal")


def _grant(role: str) -> rabbitmq_users.Grant:
    return {g.user: g for g in rabbitmq_users.grants(portals=PORTALS)}[role]


def _may(regex: str, name: str) -> bool:
    return re.search(regex, name) is not None  # RabbitMQ applies the regex unanchored, as re.search


def test_committed_definitions_are_generated_from_the_current_topology() -> None:
    committed = rabbitmq_users.DEFINITIONS.read_text()
    fresh = rabbitmq_users.dumps(rabbitmq_users.definitions())
    assert committed == fresh, "run: .venv/bin/python -m deploy.rabbitmq_users generate"


def test_r12_committed_definitions_hold_no_password() -> None:
    defs = json.loads(rabbitmq_users.DEFINITIONS.read_text())
    assert {u["name"] for u in defs["users"]} == {
        *topology.SERVICES,
        "ops",
        "console-monitor",
    }  # portals: per deployment
    assert all(u["password_hash"] == "" for u in defs["users"])
    assert "guest" not in rabbitmq_users.DEFINITIONS.read_text()


def test_r12_every_permission_is_anchored() -> None:
    for g in rabbitmq_users.grants(portals=PORTALS):
        for regex in (g.configure, g.write, g.read):
            assert regex.startswith("^") and regex.endswith("$"), (g.user, regex)


def test_r12_a_service_reads_only_its_own_queues() -> None:
    for name, q in topology.SERVICES.items():
        g = _grant(name)
        assert _may(g.read, q.inbox) and _may(g.configure, q.parking)
        for other in topology.SERVICES.values():
            if other.service != name:
                assert not _may(g.read, other.inbox), (name, other.inbox)
                assert not _may(g.configure, other.parking)
                assert not _may(g.write, other.inbox)


def test_r12_notifier_cannot_publish_to_intake_and_only_booking_binds_to_it() -> None:
    for name in topology.SERVICES:
        assert not _may(_grant(name).write, topology.INTAKE)
        assert _may(_grant(name).write, topology.EVENTS)
    assert _may(_grant("booking").read, topology.INTAKE)
    assert not _may(_grant("notifier").read, topology.INTAKE)


def test_r12_portal_writes_only_to_intake_with_intake_keys() -> None:
    g = _grant("portal.kg-portal")
    assert (g.configure, g.read) == ("^$", "^$")
    assert _may(g.write, topology.INTAKE)
    for name in (topology.EVENTS, topology.DEAD, topology.REDELIVER, "amq.default", "booking.inbox"):
        assert not _may(g.write, name)
    keys_write, _ = g.topics[topology.INTAKE]
    assert _may(keys_write, "booking.request") and not _may(keys_write, "booking.cancelled")


def test_r12_ops_reads_parking_only_and_replays_through_redeliver() -> None:
    g = _grant("ops")
    assert g.configure == "^$" and g.tags == ("management",)
    assert _may(g.read, "notifier.parking") and not _may(g.read, "notifier.inbox")
    assert _may(g.write, topology.REDELIVER) and not _may(g.write, topology.EVENTS)


def test_password_hash_is_rabbitmqs_salted_sha256() -> None:
    h = base64.b64decode(rabbitmq_users.password_hash("s3cret", salt=b"\x01\x02\x03\x04"))
    assert h == b"\x01\x02\x03\x04" + hashlib.sha256(b"\x01\x02\x03\x04s3cret").digest()


def test_local_passwords_are_created_once_and_private(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    first = rabbitmq_users.local_passwords(secrets_dir)
    assert set(first) == set(rabbitmq_users.roles()) and len(set(first.values())) == len(first)
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for role in first:
        assert stat.S_IMODE(rabbitmq_users.secret_file(secrets_dir, role).stat().st_mode) == 0o600
    assert rabbitmq_users.local_passwords(secrets_dir) == first


def test_env_passwords_name_the_missing_variables() -> None:
    env = {rabbitmq_users.env_name(r): "pw-" + r for r in rabbitmq_users.roles()}
    assert rabbitmq_users.env_passwords(env)["ops"] == "pw-ops"
    portals = {rabbitmq_users.env_name(r): "pw-" + r for r in rabbitmq_users.roles(PORTALS)}
    assert "RABBITMQ_PORTAL_KG_PORTAL_PASSWORD" in portals
    assert rabbitmq_users.env_passwords(portals, PORTALS)["portal.hw-portal"] == "pw-portal.hw-portal"
    del env["RABBITMQ_OPS_PASSWORD"]
    try:
        rabbitmq_users.env_passwords(env)
    except SystemExit as exc:
        assert "RABBITMQ_OPS_PASSWORD" in str(exc)
    else:
        raise AssertionError("a missing password must stop the init step")


def test_amqp_url_carries_the_user_and_keeps_tls_options() -> None:
    base = "amqps://guest:guest@rabbit.example:5671/?cafile=/ca.pem"
    url = rabbitmq_users.amqp_url(base, "booking", "p@ss/w", "test vhost")
    assert url == "amqps://booking:p%40ss%2Fw@rabbit.example:5671/test%20vhost?cafile=/ca.pem"


def test_render_with_passwords_and_admin_for_load_definitions() -> None:
    pw = {r: f"pw-{r}" for r in rabbitmq_users.roles()}
    defs = rabbitmq_users.definitions("/", pw, admin=("admin", "adm"))
    users = {u["name"]: u for u in defs["users"]}
    assert users["admin"]["tags"] == ["administrator"]
    salted = base64.b64decode(users["booking"]["password_hash"])
    assert salted[4:] == hashlib.sha256(salted[:4] + b"pw-booking").digest()


def test_each_portal_has_a_user_of_its_own_and_none_is_shared() -> None:
    """Issue 14: one broker user per portal, named so booking can tell the portal from `user_id`."""
    defs = rabbitmq_users.definitions(portals=PORTALS)
    names = {u["name"] for u in defs["users"]}
    assert {"portal.kg-portal", "portal.hw-portal"} <= names and "portal" not in names
    assert {topology.portal_of_user(n) for n in names} == {None, *PORTALS}
    assert all("impersonator" not in u["tags"] for u in defs["users"])  # nobody may set another user_id
    assert (
        rabbitmq_users.portals_from(None, {"RABBITMQ_PORTALS": "kg-portal, hw-portal,kg-portal"}) == PORTALS
    )
    for bad in ("KG", "a/b", "", "x" * 64, "a.b"):
        try:
            rabbitmq_users.portals_from([bad], {})
        except ValueError:
            continue
        raise AssertionError(f"portal id {bad!r} must be refused")
