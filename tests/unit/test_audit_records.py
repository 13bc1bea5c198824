"""What an audit record keeps, pseudonymises, seals and drops (R10, R11, R12). Pure, no servers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidTag

from examples.records import access_logged
from services.audit import records
from services.audit.chain import canonical
from services.audit.config import Settings
from services.audit.crypto import Keys, Pseudonymiser, Sealer, decode_aes_key
from services.audit.search import public
from shared.clock import FixedClock
from shared.events import (
    Appointment,
    BookingCompleted,
    BookingConfirmed,
    DeviceRecorded,
    Recipient,
    new_event,
)

NOW = datetime(2026, 12, 1, 1, 5, 7, 123456, tzinfo=UTC)  # 10:05 JST
CLOCK = FixedClock(NOW)
PSEUDO = Pseudonymiser(b"test-pseudonym-key")
DEVICE = DeviceRecorded(
    booking_id="b-1",
    portal_id="kg-portal",
    user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Teams/1.6",
    ip_address="203.0.113.45",
    device_id="DEV-8F2A-77C1",
    app_version="1.6.00.1234",
    observed_at=NOW,
)


def entry(payload: object, office: str = "kushiro-gyosei") -> records.Entry:
    event = new_event(payload, office_id=office, producer="booking", clock=CLOCK)  # type: ignore[type-var]
    return records.from_event(event, now=NOW, pseudonymise=PSEUDO)


def dumped(e: records.Entry) -> str:
    return canonical(e.record).decode()


def test_r11_device_ids_and_ip_addresses_are_only_pseudonyms_in_the_record() -> None:
    e = entry(DEVICE)
    text = dumped(e)
    for raw in ("DEV-8F2A-77C1", "203.0.113.45", "iPhone"):
        assert raw not in text
    assert e.record["device_key"] == PSEUDO("device", "DEV-8F2A-77C1")
    assert e.record["ip_key"] == PSEUDO("ip", "203.0.113.45")
    assert e.record["payload"]["device_key"] == e.record["device_key"]
    assert e.record["payload"]["app_version"] == "1.6.00.1234"  # not identifying: kept
    assert e.record["kind"] == "device" and e.record["sealed"] is True


def test_r11_raw_device_values_go_to_the_seal_only() -> None:
    e = entry(DEVICE)
    assert e.secrets == {
        "device_id": "DEV-8F2A-77C1",
        "ip_address": "203.0.113.45",
        "user_agent": DEVICE.user_agent,
    }


def test_r11_pseudonyms_are_keyed_and_ignore_spelling() -> None:
    other = Pseudonymiser(b"another-key")
    assert PSEUDO("ip", "2001:db8:0:0:0:0:0:1") == PSEUDO("ip", "2001:db8::1")
    assert PSEUDO("device", " DEV-1 ") == PSEUDO("device", "dev-1")
    assert PSEUDO("device", "dev-1") != other("device", "dev-1")
    assert PSEUDO("device", "dev-1") != PSEUDO("ip", "dev-1")


def test_r12_recipient_is_a_keyed_hash_of_the_email_and_nothing_else() -> None:
    confirmed = BookingConfirmed(
        booking_id="b-2",
        appointment=Appointment(
            counsellor_id="c-1",
            counsellor_name="釧路 太郎",
            start=NOW,
            end=NOW + timedelta(minutes=30),
            meeting_url="https://teams.example/meet/1",
            app="teams",
        ),
        recipient=Recipient(name="山田 花子", email="Hanako.Yamada@example.jp"),
        terms_version="2023-11-08",
    )
    e = entry(confirmed)
    text = dumped(e)
    assert "山田" not in text and "hanako" not in text.lower()
    assert e.record["payload"]["recipient"] == {"email_key": PSEUDO("email", "hanako.yamada@example.jp")}
    assert e.record["email_key"] == PSEUDO("email", "Hanako.Yamada@example.jp")
    assert e.secrets == {}  # R12: personal data is dropped, not sealed


def test_r10_completed_consultation_records_its_usage_window_in_jst_cells() -> None:
    start = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)  # 14:00 JST
    e = entry(BookingCompleted(booking_id="b-3", started_at=start, ended_at=start + timedelta(minutes=25)))
    assert e.record["kind"] == "usage"
    assert e.record["usage_start"] == start and e.record["usage_minutes"] == 25.0
    assert (e.record["day"], e.record["hour"]) == ("2026-12-01", 14)


def test_r10_usage_window_from_attendance_and_completion() -> None:
    start = datetime(2026, 12, 1, 5, 0, tzinfo=UTC)  # 14:00 JST, as staff recorded it
    joined = start - timedelta(minutes=3)  # the person was in the meeting at 13:57 JST
    done = BookingCompleted(
        booking_id="b-4",
        started_at=start,
        ended_at=start + timedelta(minutes=25),
        attended_how="joined",
        attended_at=joined,
    )
    record = entry(done).record
    assert (record["usage_start"], record["usage_end"]) == (joined, start + timedelta(minutes=25))
    assert record["usage_minutes"] == 28.0 and record["usage_from"] == "joined"
    assert (record["day"], record["hour"]) == ("2026-12-01", 13)
    shown = public(record)
    assert shown["usage_start"] == "2026-12-01T04:57:00+00:00"  # stored and answered in UTC
    assert shown["usage_start_jst"] == "2026-12-01T13:57:00+09:00"  # and shown in JST
    assert shown["usage_end_jst"] == "2026-12-01T14:25:00+09:00"
    phoned = entry(done.model_copy(update={"attended_how": "contacted"})).record
    assert phoned["usage_start"] == start and phoned["usage_from"] == "recorded_start"


def test_r10_access_record_holds_sealed_client_ip_and_user_agent() -> None:
    agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edg/131.0"
    e = entry(access_logged(at=NOW, ip_address="2001:DB8::7", user_agent=agent), office="-")
    assert e.record["kind"] == "access" and e.record["sealed"] is True
    assert e.record["ip_key"] == PSEUDO("ip", "2001:db8::7") == e.record["payload"]["ip_key"]
    assert e.record["ua_key"] == PSEUDO("ua", agent)
    assert e.secrets == {"ip_address": "2001:db8::7", "user_agent": agent}  # R11: sealed, for disclosure
    text = dumped(e)
    assert "2001:db8::7" not in text and "Win64" not in text


def test_r10_access_log_names_the_actor() -> None:
    access = access_logged(at=NOW, request_id="r-1", latency_ms=-0.0)
    e = entry(access, office="-")
    assert e.record["kind"] == "access" and e.record["actor"] == "portal:kg"
    assert e.record["stream"] == records.SYSTEM_STREAM
    assert e.record["occurred_at"].microsecond == 123000  # milliseconds, as BSON keeps them


def test_seal_opens_only_for_its_own_record() -> None:
    sealer = Sealer({"k1": b"k" * 32}, "k1")
    sealed = sealer.seal({"device_id": "DEV-1"}, "event-1")
    assert sealer.open(sealed, "event-1") == {"device_id": "DEV-1"}
    with pytest.raises(InvalidTag):
        sealer.open(sealed, "event-2")


def test_seal_keys_rotate_by_key_id() -> None:
    old = Sealer({"k1": b"a" * 32}, "k1").seal({"ip_address": "192.0.2.1"}, "e")
    both = Sealer({"k1": b"a" * 32, "k2": b"b" * 32}, "k2")
    assert both.open(old, "e") == {"ip_address": "192.0.2.1"}
    assert both.seal({"x": "y"}, "e")["key_id"] == "k2"


def test_keys_come_from_settings() -> None:
    s = Settings(audit_seal_keys={"2026a": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, secret_key="s3")
    keys = Keys.from_settings(s)
    assert keys.seal_id == "2026a" and keys.seal["2026a"] == b"0123456789abcdef0123456789abcdef"
    assert keys.pseudonym != keys.chain
    with pytest.raises(ValueError, match="16, 24 or 32"):
        decode_aes_key("c2hvcnQ=")


def test_bootstrap_keys_are_refused_in_prod() -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        Settings(
            environment="prod",
            secret_key="a-real-secret-value",
            amqp_url="amqp://audit:x@h/",
            audit_bootstrap_auditor_key="a.b",
        )


def test_internal_record_carries_details_in_the_audit_stream() -> None:
    e = records.internal("audit.disclosure_requested", actor="ak-1", details={"x": 1}, now=NOW)
    assert e.stream == records.AUDIT_STREAM and e.record["kind"] == "audit"
    assert json.loads(canonical(e.record))["payload"] == {"x": 1}
