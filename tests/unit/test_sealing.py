"""R12: outbox events and resting broker copies sealed whole, opening only where they were sealed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from services.booking.crypto import Vault
from shared.clock import FixedClock
from shared.events import DeviceRecorded, Envelope, MessageError, new_event
from shared.messaging import open_resting_copy, seal_resting_copy
from shared.sealing import Sealer, SealError, SecretSealer
from shared.store import outbox
from shared.topology import SEALED_HEADER

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def _device(device_id: str) -> Envelope[Any]:
    payload = DeviceRecorded(portal_id="p", device_id=device_id, ip_address="192.0.2.7", observed_at=NOW)
    return new_event(payload, office_id="kushiro-gyosei", producer="booking", clock=FixedClock(NOW))


@pytest.mark.parametrize("sealer", [Vault.from_secret("unit"), SecretSealer.from_secret("unit", "service:x")])
def test_r12_an_outbox_event_rests_sealed_whole_and_opens_only_in_its_own_place(sealer: Sealer) -> None:
    a, b = _device("DEV-UNIT-A"), _device("DEV-UNIT-B")
    kept = outbox.new_document_fields([a, b], sealer=sealer)["outbox"]
    text = json.dumps(kept)
    assert "DEV-UNIT" not in text and "192.0.2.7" not in text
    assert [k["event_id"] for k in kept] == [str(a.event_id), str(b.event_id)]
    assert outbox.open_event(kept[0], sealer) == a
    moved = {**kept[0], "event_id": kept[1]["event_id"]}  # another event's place: does not open
    with pytest.raises(Exception):  # noqa: B017 - SealError, or the vault's InvalidTag
        outbox.open_event(moved, sealer)
    with pytest.raises(outbox.SealedEventError):
        outbox.open_event(kept[0], None)
    assert outbox.open_event(outbox.seal_event(a, None), None) == a  # no sealer: kept as it was


def test_r12_a_resting_copy_opens_only_for_the_service_that_sealed_it() -> None:
    sealer = SecretSealer.from_secret("unit", "service:notifier")
    body = b"\xff\xfe not even UTF-8, Piiscan Taro"
    sealed = seal_resting_copy(sealer, "notifier", body)
    assert b"Piiscan" not in sealed
    headers = {SEALED_HEADER: "1"}
    assert open_resting_copy(sealer, "notifier", sealed, headers) == body
    assert open_resting_copy(sealer, "notifier", body, {}) == body  # not sealed: as it came
    for wrong in (SecretSealer.from_secret("other", "service:notifier"), None):
        with pytest.raises(MessageError, match="sealed-copy"):
            open_resting_copy(wrong, "notifier", sealed, headers)
    with pytest.raises(MessageError):
        open_resting_copy(sealer, "audit", sealed, headers)  # bound to the service it was sealed for
    with pytest.raises(SealError):
        sealer.open("k9:AAAA", "x")
