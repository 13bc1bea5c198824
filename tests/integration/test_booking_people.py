"""People behind booking's staff keys (R10, R11): the console acting for a named person, the access
record naming the person and the key, one key revoked by its id.

The booking service runs in-process against the real broker and FerretDB; the console's key is
registered as `make up` registers it, but for one office (so another office is one it lacks).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.booking.config import Settings
from services.booking.ops import ensure_console_key, opened, revoke_staff_key
from services.booking.store.access import CredentialStore
from shared.store.keys import Holder, key_hash, key_id
from tests.integration.test_booking_lifecycle import confirmed, kg_booking, service_of
from tests.support.booking import HW, KG, PORTAL_KEY, STAFF_KEY, Harness, running

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = "csk_test-console-key-0123456789abcdefghijklmnopqrstu"
CONSOLE_ID = key_id("csk", key_hash(CONSOLE))


def store(h: Harness) -> CredentialStore:
    return service_of(h).stores.credentials


@pytest.fixture
async def h(make_settings: Callable[..., Any], amqp_url: str) -> AsyncIterator[Harness]:
    async with running(make_settings, amqp_url) as harness:
        console = Holder(roles=["staff"], delegates=True)
        await store(harness).register(CONSOLE, "staff", "dev-console", [KG], harness.now, holder=console)
        yield harness


def as_person(person: str | None = None, key: str = CONSOLE, **acting: str) -> dict[str, str]:
    named = {"X-Acting-Person": person} if person else {}
    return (
        {"Authorization": f"Bearer {key}"} | named | {f"X-Acting-{k.title()}": v for k, v in acting.items()}
    )


async def test_r10_the_console_key_acts_only_for_a_named_person_and_the_access_record_names_them(
    h: Harness,
) -> None:
    booking_id = await kg_booking(h)
    await confirmed(h, booking_id)
    kg, hw = f"/v1/offices/{KG}/bookings", f"/v1/offices/{HW}/bookings"

    async def status(path: str, headers: dict[str, str]) -> int:
        return (await h.client.get(path, headers=headers)).status_code

    nobody = await h.client.get(kg, headers=as_person())
    assert nobody.status_code == 401 and "acts only for a named person" in nobody.json()["detail"]
    hanako = {"roles": "staff", "offices": KG}
    assert await status(kg, as_person("tanaka.hanako", **hanako)) == 200
    assert await status(hw, as_person("tanaka.hanako", roles="staff", offices=HW)) == 403  # not the key's
    assert await status(kg, as_person("tanaka.hanako", roles="staff,auditor", offices=KG)) == 403
    assert await status(kg, as_person("tanaka.hanako", offices=KG)) == 403  # no role asserted: none
    assert await status(kg, as_person("tanaka.hanako", roles="staff")) == 403  # no office asserted: none
    assert await status(kg, as_person("tanaka.hanako", key=STAFF_KEY)) == 403  # a plain key: nobody else
    assert await status(f"/v1/bookings/{booking_id}", as_person(key=PORTAL_KEY, roles="staff")) == 403

    r = await h.client.post(f"/v1/bookings/{booking_id}/cancellations", json={"channel": "phone"},
                            headers=as_person("tanaka.hanako", **hanako))  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["cancellation"]["recorded_by"] == "tanaka.hanako"  # the person, in the booking's record

    logged = await h.events.wait("access.logged", actor="tanaka.hanako", status=200, n=2)
    assert {e["payload"]["credential"] for e in logged} == {CONSOLE_ID}  # R10: the person and their key
    [own] = await h.events.wait("access.logged", actor="dev-staff", status=403)
    assert own["payload"]["credential"] == key_id("csk", key_hash(STAFF_KEY))


async def test_r11_keys_of_one_person_and_a_revoked_key_opens_nothing(h: Harness) -> None:
    env = {**os.environ, "DB_PREFIX": h.settings.db_prefix, "ENVIRONMENT": "test"}

    def consultctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    create = ("staff-key", "create", "--staff", "kg-desk", "--office", KG, "--name", "Suzuki Ichiro")
    made = [await asyncio.to_thread(consultctl, *create) for _ in range(2)]
    assert all(m.returncode == 0 for m in made), [m.stderr for m in made]
    first, second = (m.stdout.strip() for m in made)
    kid = made[0].stderr.split("key id ")[1].split()[0]
    assert kid == key_id("csk", key_hash(first))
    kg = f"/v1/offices/{KG}/bookings"
    for key in (first, second):
        assert (await h.client.get(kg, headers=as_person(key=key))).status_code == 200

    revoked = await asyncio.to_thread(consultctl, "staff-key", "revoke-key", kid)
    assert revoked.returncode == 0 and "suzuki-ichiro" in revoked.stdout, revoked.stderr
    assert (await h.client.get(kg, headers=as_person(key=first))).status_code == 401
    assert (await h.client.get(kg, headers=as_person(key=second))).status_code == 200  # the other key
    doc = await store(h).collection.find_one({"_id": key_hash(first)})
    assert doc is not None and doc["revoked"] and doc["revoked_by"].startswith("cli:")
    assert doc["person"] == "suzuki-ichiro" and doc["name"] == "Suzuki Ichiro"
    again = await asyncio.to_thread(consultctl, "staff-key", "revoke-key", kid)
    assert again.returncode == 1 and "no active staff key" in again.stderr
    portal_id = key_id("cpk", key_hash(PORTAL_KEY))
    wrong_kind = await asyncio.to_thread(consultctl, "staff-key", "revoke-key", portal_id)
    assert wrong_kind.returncode == 1  # a portal's key is not revoked as a staff key


async def test_r11_make_up_keeps_the_console_key_and_replaces_a_revoked_one(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    settings: Settings = make_settings(Settings)
    path = tmp_path / "console-booking-key.txt"
    key = await ensure_console_key(path, settings)
    assert oct(path.stat().st_mode)[-3:] == "600" and await ensure_console_key(path, settings) == key
    async with opened(settings) as stores:
        cred = await stores.credentials.find(key)
    assert cred is not None and (cred.person, cred.delegates, cred.offices) == ("dev-console", True, ("*",))
    assert await revoke_staff_key(key_id("csk", key_hash(key)), "test", settings) is not None
    fresh = await ensure_console_key(path, settings)
    assert fresh != key and path.read_text().strip() == fresh  # a revoked key is never revived
    async with opened(settings) as stores:
        assert await stores.credentials.find(key) is None and await stores.credentials.find(fresh) is not None
