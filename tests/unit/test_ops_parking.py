"""The pure parts of operating parked messages: what a replay sends back, what may be shown of a parked
message (R12: never a sealed body), the operations page's figures, the console's monitoring user and
the operator role each service's key store and the console know."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deploy import rabbitmq_users
from services.audit import auth as audit_auth
from services.booking.store.access import DEFAULT_ROLES, ROLES
from services.console import operations
from services.console.accounts import new_account
from services.console.clients import Acting
from services.console.config import Settings as ConsoleSettings
from services.notifier.keys import OpsKey
from services.scheduler.store import staff_keys
from shared import parking, topology
from shared.acting import OPERATOR, Refusal, acting
from shared.store.keys import Holder


def _may(regex: str, name: str) -> bool:
    return re.search(regex, name) is not None


def test_a_replayed_message_keeps_its_own_headers_and_the_seal_and_drops_the_brokers() -> None:
    parked = {
        "app-header": "kept",
        topology.SEALED_HEADER: "1",
        topology.SENDER_HEADER: "sealed-sender",
        topology.REASON_HEADER: "invalid-event",
        topology.ATTEMPT_HEADER: 3,
        "x-death": [{"count": 1}],
    }
    sent = parking.replay_headers(parked, "booking.parking")
    assert sent == {
        "app-header": "kept",
        topology.SEALED_HEADER: "1",
        topology.SENDER_HEADER: "sealed-sender",
        parking.REPLAYED_HEADER: "booking.parking",
    }  # a fresh attempt: no attempt count, no reason, no broker history
    assert parking.replay_headers(None, "audit.parking") == {parking.REPLAYED_HEADER: "audit.parking"}


def test_r12_a_sealed_parked_body_is_never_shown_only_where_it_came_from_and_why() -> None:
    sealed = {
        "payload": "c2VhbGVk-opaque",
        "routing_key": "booking.parking",
        "properties": {
            "message_id": "m-1",
            "headers": {
                topology.SEALED_HEADER: "1",
                topology.REASON_HEADER: "invalid-event",
                topology.DETAIL_HEADER: "body: not UTF-8 (byte 0)",
                "x-routing-key": "appointment.confirmed",
            },
        },
    }
    shown = parking.Parked.of(sealed)
    assert (shown.sealed, shown.body) == (True, None)
    assert (shown.routing_key, shown.reason, shown.message_id) == (
        "appointment.confirmed",
        "invalid-event",
        "m-1",
    )
    plain = parking.Parked.of({"payload": "{}", "routing_key": "notifier.parking", "properties": {}})
    assert (plain.body, plain.reason, plain.routing_key) == ("{}", parking.BROKER_LIMIT, "notifier.parking")


def test_peeking_leaves_the_messages_parked() -> None:
    assert parking.peek_body(20) == {
        "count": 20,
        "ackmode": "ack_requeue_true",
        "encoding": "auto",
        "truncate": 2000,
    }


def test_a_replay_asks_for_a_bounded_count() -> None:
    assert parking.ReplayAsk(limit=1).limit == 1
    for bad in (0, -1, parking.MAX_REPLAY + 1):
        with pytest.raises(ValueError, match="limit"):
            parking.ReplayAsk(limit=bad)


def _queue(name: str, ready: int = 0, unacked: int = 0, consumers: int = 0) -> dict[str, object]:
    return {
        "name": name,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "consumers": consumers,
        "message_stats": {"publish_details": {"rate": 1.5}},
    }


def test_the_operations_page_counts_each_services_queues_and_parked_messages() -> None:
    listed = [
        _queue("booking.inbox", ready=2, unacked=1, consumers=1),
        _queue("booking.parking", ready=3),
        _queue("notifier.parking", ready=1),
        _queue("someone-elses.queue", ready=99),
    ]
    figures = {f.service: f for f in operations.figures(listed)}
    assert list(figures) == list(topology.SERVICES)  # every service, in the topology's order
    booking = figures["booking"]
    assert (booking.parked, booking.consumers, booking.replays_over_http) == (3, 1, True)
    inbox = booking.queues[0]
    assert (inbox.name, inbox.kind, inbox.total, inbox.rate_in, inbox.found) == (
        "booking.inbox",
        "inbox",
        3,
        1.5,
        True,
    )
    assert [q.kind for q in booking.queues].count("delay") == len(topology.BOOKING.retry_delays)
    assert not figures["scheduler"].queues[0].found  # not declared: shown as missing, not as 0
    assert (figures["notifier"].parked, figures["notifier"].replays_over_http) == (1, True)
    assert not figures["console"].replays_over_http  # binds no queue: nothing of its own to replay
    assert operations.of_service(listed, "booking") == booking
    assert operations.reason_text("invalid-event") == "読み取れないイベント（invalid-event）"
    assert operations.reason_text("some-new-reason") == "some-new-reason"


def test_r12_the_consoles_monitoring_user_reads_parking_alone_and_writes_nothing() -> None:
    g = {g.user: g for g in rabbitmq_users.grants()}[rabbitmq_users.CONSOLE_MONITOR]
    assert g.tags == ("monitoring",)
    assert (g.configure, g.write) == (rabbitmq_users.NOTHING, rabbitmq_users.NOTHING)
    for q in topology.SERVICES.values():
        assert _may(g.read, q.parking) and not _may(g.read, q.inbox)
    assert rabbitmq_users.CONSOLE_MONITOR in rabbitmq_users.roles()


def test_r12_a_service_may_replay_its_own_parking_and_no_other() -> None:
    grants = {g.user: g for g in rabbitmq_users.grants()}
    for name, q in topology.SERVICES.items():
        g = grants[name]
        assert _may(g.read, q.parking) and _may(g.write, topology.REDELIVER)
        for other in topology.SERVICES.values():
            if other.service != name:
                assert not _may(g.read, other.parking)


def test_the_console_reads_the_management_api_as_its_own_user(tmp_path: Path) -> None:
    base: dict[str, Any] = {"secret_key": "x" * 32, "rabbitmq_secrets_dir": tmp_path}
    assert ConsoleSettings(**base).monitor() is None
    (tmp_path / "rabbitmq-console-monitor.password").write_text("from-file\n")  # what `make up` keeps
    assert ConsoleSettings(**base).monitor() == ("http://127.0.0.1:15672/api", "console-monitor", "from-file")
    secure = ConsoleSettings(
        **base, rabbitmq_management_url="https://mq:15671/api", rabbitmq_monitor_password="pw"
    )
    assert secure.monitor() == ("https://mq:15671/api", "console-monitor", "pw")
    dev = ConsoleSettings(**base, rabbitmq_management_url="http://guest:guest@127.0.0.1:15672/api")
    assert dev.monitor() == ("http://127.0.0.1:15672/api", "guest", "guest")  # development compose, tests
    assert ConsoleSettings(**base, amqp_url="amqp://u:p@h:5672/test-v%2F1").vhost == "test-v/1"


def test_the_operator_role_is_asserted_to_the_services_with_http_replay() -> None:
    a = Acting("ops.tanaka", ("operator",))
    for service in operations.REPLAYS_OVER_HTTP:
        assert a.headers(service)["X-Acting-Roles"] == OPERATOR
    account = new_account(
        person_id="ops.tanaka",
        name="田中 運用",
        roles=["operator"],
        password="a long enough password",
        offices=[],
        counsellor_id=None,
        known_offices=set(),
        now=datetime(2026, 12, 4, tzinfo=UTC),
    )
    assert account.has("operator") and not account.has("staff")


def test_operator_is_a_role_keys_may_hold_but_never_by_default() -> None:
    assert OPERATOR in ROLES["staff"] and OPERATOR not in DEFAULT_ROLES["staff"]
    assert OPERATOR in staff_keys.ROLES and OPERATOR in audit_auth.ROLES
    assert OPERATOR not in audit_auth.READERS  # an operator opens no audit record
    assert Holder().fields("desk-1", ROLES["staff"], DEFAULT_ROLES["staff"])["roles"] == ["staff"]
    # the console's key asserts it only where the key holds it
    assert acting(
        [("x-acting-person", "ops.tanaka"), ("x-acting-roles", "operator")],
        delegates=True,
        roles={"operator"},
    )
    with pytest.raises(Refusal):
        acting(
            [("x-acting-person", "ops.tanaka"), ("x-acting-roles", "operator")],
            delegates=True,
            roles={"staff"},
        )


def test_the_notifiers_operator_keys_act_for_a_named_person_with_the_role_they_hold() -> None:
    console = OpsKey("dev-console", key_id="cnk-0", person="dev-console", delegates=True)
    acted = console.acting_for([("X-Acting-Person", "ops.tanaka"), ("X-Acting-Roles", "operator")])
    assert (acted.person, acted.roles) == ("ops.tanaka", frozenset({"operator"}))
    assert console.acting_for([("X-Acting-Person", "sato.jiro")]).roles == frozenset()  # nothing asserted
    with pytest.raises(Refusal) as unnamed:
        console.acting_for([])
    assert unnamed.value.status_code == 401
    plain = OpsKey("desk", key_id="cnk-1", person="suzuki")
    assert plain.acting_for([]) is plain
    with pytest.raises(Refusal):  # a plain key's X-Acting-* are refused, never believed
        plain.acting_for([("X-Acting-Person", "someone.else")])
