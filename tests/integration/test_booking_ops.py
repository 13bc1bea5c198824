"""Staff read side, device records (R10), and the ops commands (dev key, consultctl) against real servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from examples import forms
from services.booking.config import Settings
from services.booking.ops import ensure_dev_key, import_jobseekers, seal_outboxes
from shared import topology
from shared.events import BookingConfirmed, Envelope, Recipient, SlotAssigned, new_event
from shared.store import outbox
from tests.integration.test_booking_lifecycle import appointment
from tests.support import eventually
from tests.support.booking import HW, KG, STAFF_KEY, Harness, running

ROOT = Path(__file__).resolve().parents[2]
TUE = date(2026, 11, 24)


@pytest.fixture
async def h(make_settings: Callable[..., Any], amqp_url: str) -> AsyncIterator[Harness]:
    async with running(make_settings, amqp_url) as harness:
        yield harness


async def test_staff_list_filters_by_status_date_and_phone(h: Harness) -> None:
    kg = h.policy(KG)
    a = (await h.book(KG, forms.kg_form(kg, TUE, h.now, phone="0154-11-2222"))).json()["booking_id"]
    b = (await h.book(KG, forms.kg_form(kg, date(2026, 11, 25), h.now))).json()["booking_id"]
    event = new_event(SlotAssigned(booking_id=a, appointment=appointment(TUE)), office_id=KG,
                      producer="scheduler", clock=h.clock)  # fmt: skip
    await h.publish(event.model_dump(mode="json"), event.type, topology.EVENTS)
    await h.status_becomes(a, "confirmed")

    async def ids(**params: Any) -> list[str]:
        r = await h.staff("GET", f"/v1/offices/{KG}/bookings", params=params)
        assert r.status_code == 200, r.text
        return [v["booking_id"] for v in r.json()]

    assert await ids() == [a, b]  # by appointment or first wished time
    assert await ids(status="confirmed") == [a]
    assert await ids(status=["requested", "confirmed"]) == [a, b]
    assert await ids(**{"from": "2026-11-25", "to": "2026-11-25"}) == [b]
    assert await ids(phone="０１５４－１１－２２２２") == [a]  # keyed-hash look-up of the normalised phone
    r = await h.staff("GET", f"/v1/offices/{KG}/bookings", params={"phone": "12"})
    assert r.status_code == 422
    [view] = (await h.staff("GET", f"/v1/offices/{KG}/bookings", params={"status": "confirmed"})).json()
    assert view["person"]["phone"] == "+81154112222" and view["history"][-1]["status"] == "confirmed"
    assert (await h.portal("GET", f"/v1/offices/{KG}/bookings")).status_code == 403  # staff only


async def test_r10_device_identification_goes_to_audit_as_device_recorded(h: Harness) -> None:
    device = {"user_agent": "Mozilla/5.0 Teams/1.6", "ip_address": "203.0.113.7", "device_id": "D-1"}
    r = await h.book(KG, forms.kg_form(h.policy(KG), TUE, h.now, device=device))
    booking_id = r.json()["booking_id"]
    [recorded] = await h.events.wait("device.recorded", booking_id=booking_id)
    assert recorded["payload"]["device_id"] == "D-1" and recorded["payload"]["portal_id"] == "dev-portal"
    observed = {
        "message_id": "3b1f0c4e-0000-4000-8000-000000000001",
        "type": "device.observed",
        "office_id": KG,
        "sent_at": h.now.isoformat(),
        "portal_id": "dev-portal",
        "booking_id": booking_id,
        "user_agent": "Mozilla/5.0 Teams/1.7",
    }
    await h.publish(observed, "device.observed")
    await h.publish(observed, "device.observed")  # the same message twice: recorded once
    await h.events.wait("device.recorded", n=2, booking_id=booking_id)
    await h.quiet()
    assert len(h.events.of("device.recorded", booking_id=booking_id)) == 2


async def test_dev_key_cli_and_jobseeker_import(
    make_settings: Callable[..., Any], amqp_url: str, tmp_path: Path
) -> None:
    settings: Settings = make_settings(Settings)
    key_file = tmp_path / "portal-key.txt"
    key = await ensure_dev_key(key_file, "portal", settings)
    assert key_file.read_text().strip() == key and oct(key_file.stat().st_mode)[-3:] == "600"
    assert await ensure_dev_key(key_file, "portal", settings) == key  # kept, not replaced

    records = tmp_path / "jobseekers.csv"
    records.write_text(
        "office_id,jobseeker_number,name,phone,mypage_email\n"
        f"{HW},12345-00000021,港北 一郎,090-2121-2121,ichiro@mypage.example.jp\n"
        f"{HW},1234500000022,港北 二郎,090-2222-2222,\n"
        f"{HW},bad,港北 三郎,090-2323-2323,x@x.jp\n",
        encoding="utf-8",
    )
    assert await import_jobseekers(records, settings) == {"applied": 2, "older": 0, "invalid": 1}

    env = {**os.environ, "DB_PREFIX": settings.db_prefix, "ENVIRONMENT": "test"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.booking.keys", "ensure-dev-key", str(tmp_path / "k2.txt"),
         "--staff-file", str(tmp_path / "s2.txt")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "k2.txt" in done.stdout and (tmp_path / "s2.txt").read_text().startswith("csk_")

    async with running(make_settings, amqp_url) as h:
        assert (await h.book(KG, forms.kg_form(h.policy(KG), TUE, h.now), token=key)).status_code == 202
        body = forms.hw_form(h.policy(HW), date(2026, 11, 26), h.now, jobseeker_number="12345-00000021",
                                phone="09021212121")  # fmt: skip
        r = await h.book(HW, body)
        assert r.status_code == 202, r.text
        booking_id = r.json()["booking_id"]

    def consultctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    shown = consultctl("booking", "show", booking_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "requested" and "person" not in json.loads(shown.stdout)
    assert (
        json.loads(consultctl("booking", "show", booking_id, "--pii").stdout)["person"]["name"] == "港北 花子"
    )
    created = consultctl("portal-key", "create", "--portal", "kg-portal", "--office", KG)
    assert created.returncode == 0 and created.stdout.startswith("cpk_")
    assert consultctl("portal-key", "create", "--portal", "x", "--office", "nowhere").returncode != 0
    imported = consultctl("jobseekers", "import", str(records))
    assert imported.returncode == 1  # one invalid record
    assert json.loads(imported.stdout) == {"applied": 2, "older": 0, "invalid": 1}
    assert STAFF_KEY not in shown.stdout


async def test_r12_seal_outboxes_seals_what_older_versions_kept_in_clear_and_nothing_is_sent_again(
    h: Harness,
) -> None:
    """Documents written before outboxes were sealed: `consultctl booking seal-outboxes` seals their
    events in place (ids kept: the relay publishes what was pending, once, and nothing sent before);
    a claim still open is left to its writer."""
    runtime = h.runtime
    db, vault = runtime.db, h.settings.vault()
    [relay] = [r for r in runtime.relays if r.collection.name == "booking_changes"]
    marker = f"legacy.{uuid.uuid4().hex[:10]}@example.jp"

    def confirmed(booking_id: str) -> Envelope[Any]:
        person = Recipient(name="旧版 花子", email=marker)
        payload = BookingConfirmed(
            booking_id=booking_id, appointment=appointment(TUE), recipient=person, terms_version="2023-11-08"
        )
        return runtime.event(payload, KG)  # type: ignore[no-any-return]

    sent, pending = confirmed("legacy-1"), confirmed("legacy-2")
    # as an older version wrote them: clear events, one published already, one not yet
    for event in (sent, pending):
        doc = {"_id": f"{event.payload.booking_id}:00000001", **outbox.new_document_fields([event])}
        await db["booking_changes"].insert_one(doc)
    await db["booking_changes_sent"].insert_one({"_id": str(sent.event_id)})
    open_claim = {"_id": "p\x1fopen", "state": "claimed", **outbox.new_document_fields([sent])}
    await db["requests"].insert_one(open_claim)

    assert await seal_outboxes(h.settings) == {"booking_changes": 2, "people_changes": 0, "requests": 0}

    for event in (sent, pending):
        doc = await db["booking_changes"].find_one({"_id": f"{event.payload.booking_id}:00000001"})
        assert doc is not None and marker not in json.dumps(doc, default=str)
        assert outbox.open_event(doc["outbox"][0], vault) == event
    assert await db["requests"].find_one({"_id": "p\x1fopen"}) == open_claim  # its writer may still append
    assert await seal_outboxes(h.settings) == {"booking_changes": 0, "people_changes": 0, "requests": 0}
    for event in (sent, pending):  # markers left by a crash: the relay reads the sealed documents
        await outbox.announce(db["booking_changes"], f"{event.payload.booking_id}:00000001", [event])
    relay.poke()
    [out] = await h.events.wait("booking.confirmed", booking_id="legacy-2")
    assert out["payload"]["recipient"]["email"] == marker  # opened just before publishing
    await eventually(lambda: _no_markers(relay), what="both markers settled")
    assert h.events.of("booking.confirmed", booking_id="legacy-1") == []  # published before: not again


async def _no_markers(relay: Any) -> bool:
    return bool(await relay.backlog() == 0)
