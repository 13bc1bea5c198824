"""The text rules and the safe JSON reader (issue 14): one rule for every string of every command,
event and HTTP body (shared/text.py), and JSON from outside refused with the field when its shape is
hostile (shared/safejson.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from services.audit.disclosure import DisclosureIn, Scope
from services.audit.disclosure_api import Decision
from services.booking.api import CancelIn
from services.booking.staff_api import AttendanceIn, CompletionIn, RefusalIn
from services.scheduler.api import ConfirmIn, CounsellorIn, OptionIn, ProposeIn
from services.scheduler.availability import Counsellor, DatedException
from shared import commands, events, safejson
from shared.commands import INTAKE_TYPES, BookingForm, DeviceInfo, ObserveDevice
from shared.events import REGISTRY, BookingRejected, DeviceRecorded, Envelope, parse_event
from shared.text import CleanText, no_controls, shown

BODIES: tuple[type[BaseModel], ...] = (
    CancelIn,
    AttendanceIn,
    CompletionIn,
    RefusalIn,
    CounsellorIn,
    ConfirmIn,
    OptionIn,
    ProposeIn,
    Counsellor,
    DatedException,
    DisclosureIn,
    Scope,
    Decision,
    BookingForm,
    DeviceInfo,
)
HOSTILE = [
    "\x00",
    "\x1b[31m",
    "\r\n",
    "\x7f",
    "\x85",
    "\u202e",
    "\u2066",
    "\u200b",
    "\u2028",
    "\ufeff",
    "\ue000",
]


@pytest.mark.parametrize(
    "model", [*REGISTRY.values(), *INTAKE_TYPES.values(), *BODIES, Envelope], ids=lambda m: m.__name__
)
def test_r12_every_event_command_and_body_model_applies_the_text_rules(model: type[BaseModel]) -> None:
    assert issubclass(model, CleanText)


@pytest.mark.parametrize("char", HOSTILE, ids=lambda c: f"U+{ord(c[0]):04X}")
def test_r10_device_fields_refuse_controls_and_format_characters(char: str) -> None:
    for field in ("user_agent", "device_id", "app_version"):
        with pytest.raises(ValidationError) as caught:
            DeviceInfo(**{field: f"Mozilla{char}5.0"})
        assert caught.value.errors()[0]["loc"] == (field,)


def test_r10_the_ip_address_is_an_ip_in_canonical_form() -> None:
    assert DeviceInfo(ip_address=" 2001:DB8:0:0::1 ").ip_address == "2001:db8::1"
    assert DeviceInfo(ip_address="192.0.2.1").ip_address == "192.0.2.1"
    for bad in ("not-an-ip", "999.0.0.1", "192.0.2.1\x00", "fe80::1%eth0\r\n", "1.2.3.4/24"):
        with pytest.raises(ValidationError, match="ip_address"):
            DeviceInfo(ip_address=bad)


def test_r12_a_raw_value_with_controls_is_refused_even_if_normalisation_would_drop_them() -> None:
    assert commands.normalize_phone("0154-22-1234\x00") == "+81154221234"  # the parser drops it
    with pytest.raises(ValidationError) as caught:
        BookingForm.model_validate({"phone": "0154-22-1234\x00", "windows": []})
    assert ("phone",) in [e["loc"] for e in caught.value.errors()]


def test_r12_free_text_fields_may_hold_line_feeds_and_tabs_only() -> None:
    assert RefusalIn(ground="暴言", detail="一行目\n\t二行目").detail == "一行目\n\t二行目"
    with pytest.raises(ValidationError):
        RefusalIn(ground="暴言", detail="一行目\r\n二行目")
    with pytest.raises(ValidationError):
        CancelIn(channel="phone", recorded_by="窓口\n山田")  # a name is one line


def test_events_refuse_controls_and_unknown_keys_on_the_wire() -> None:
    ok = events.new_event(
        DeviceRecorded(portal_id="p", observed_at=datetime(2026, 1, 1, tzinfo=UTC)),
        office_id="kg",
        producer="booking",
        clock=_Clock(),
    )
    parse_event(ok.to_json())
    for payload in ({"portal_id": "p\x1b[2J"}, {"portal_id": "p", "extra": 1}, {"observed_at": 1700000000}):
        data = ok.model_dump(mode="json")
        data["payload"].update(payload)
        with pytest.raises(events.InvalidEvent):
            parse_event(data)
    with pytest.raises(ValidationError):
        BookingRejected(request_id="k", portal_id="p", message="bad\u202e")


class _Clock:
    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)


def test_shown_escapes_what_the_rules_refuse_and_cuts_long_text() -> None:
    assert shown("a\u202eb\x00c\ud800\n") == "a\\u202eb\\x00c\\ud800\\n"
    assert shown("a\n\tb\r", allowed="\n\t") == "a\n\tb\\r"
    assert no_controls(shown("\x1b[2J" * 10)) == "\\x1b[2J" * 10
    assert len(shown("x" * 500, 100)) == 100


# --------------------------------------------------------------------------- safe JSON


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (b"[" * 50_000, "body", "nested deeper than 32 levels"),
        (b'{"a":' * 30_000, "body", "nested deeper than 32 levels"),
        (b'{"a": ' + b"[" * 32 + b"]" * 32 + b"}", "body", "nested deeper than 32 levels"),
        (b'{"name": "\\ud800"}', "name", "a lone surrogate U+D800 is not a character"),
        (b'{"a": [0, {"b": "x\\udfff"}]}', "a.1.b", "a lone surrogate U+DFFF is not a character"),
        (b'{"\\ud83d": 1}', "\\ud83d", "a lone surrogate U+D83D is not a character"),
        (b'{"a": 1, "a": 2}', "a", "the same key appears twice in one object"),
        (b'{"n": NaN}', "body", "NaN is not JSON"),
        (b'{"n": 1e400}', "body", "the number 1e400 is out of range"),
        (
            b'{"n": 9223372036854775808}',
            "body",
            "the number 9223372036854775808 is out of range (64-bit integers only)",
        ),
        (b'{"n": ' + b"9" * 5000 + b"}", "body", None),
        (b"\xff{}", "body", "not UTF-8 (byte 0)"),
        (b'{"a": "\xed\xa0\x80"}', "body", None),
        ('{"a": 1}'.encode("utf-16"), "body", None),
        (b"\xef\xbb\xbf{}", "body", None),
        (b"{", "body", None),
    ],
)
def test_hostile_json_is_refused_with_the_field(raw: bytes, field: str, message: str | None) -> None:
    with pytest.raises(safejson.UnsafeJson) as caught:
        safejson.loads(raw)
    assert caught.value.field == field
    if message is not None:
        assert caught.value.message == message


def test_safe_json_reads_ordinary_json_and_brackets_inside_strings() -> None:
    assert safejson.loads(b'{"a": "[[[[{{{{", "b": ["\\"]", [[]]], "c": -9223372036854775808}') == {
        "a": "[[[[{{{{",
        "b": ['"]', [[]]],
        "c": -(2**63),
    }
    assert safejson.loads("[" * 32 + "]" * 32) == safejson.loads(b"[" * 32 + b"]" * 32)


def test_observe_device_over_amqp_uses_the_same_rules() -> None:
    base = {
        "message_id": "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b",
        "type": "device.observed",
        "office_id": "kushiro-gyosei",
        "sent_at": "2026-11-22T10:00:00+09:00",
        "portal_id": "p",
    }
    assert ObserveDevice.model_validate({**base, "ip_address": "::1"}).ip_address == "::1"
    for bad in ({"device_id": "a\nb"}, {"ip_address": "x"}, {"user_agent": "\u202e"}, {"sent_at": 1}):
        with pytest.raises(ValidationError):
            ObserveDevice.model_validate({**base, **bad})


def test_r12_the_printable_fast_path_refuses_exactly_what_the_character_scan_refuses() -> None:
    """`no_controls` skips its per-character scan for `str.isprintable()` text: that must never let
    through a character the rule refuses (checked over every code point), and text that is not
    printable still gets the scan (spaces of other kinds pass, controls do not)."""
    from shared.text import _refused, is_clean

    leaks = [cp for cp in range(0x110000) if chr(cp).isprintable() and _refused(chr(cp))]
    assert not leaks, [f"U+{cp:04X}" for cp in leaks[:10]]
    for cp in (0x00, 0x1B, 0x7F, 0x85, 0xA0, 0x200B, 0x202E, 0x2028, 0x2029, 0x3000, 0xD800, 0xE000, 0x378):
        c = chr(cp)
        assert is_clean(f"山田{c}太郎") == (not _refused(c)), f"U+{cp:04X}"
    assert is_clean("山田\u3000太郎") and not is_clean("a\nb") and is_clean("a\nb", "\n")
