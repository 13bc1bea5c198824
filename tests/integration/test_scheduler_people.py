"""People behind the scheduler's keys (R10, R11): the console acting for a named person, a counsellor
reading only their own schedule, revoking one key by its id.

The scheduler runs in-process against the real broker and FerretDB; the console's key is registered
in its store as `make up` registers it (every office, roles staff and counsellor, `delegates`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from ops.cli import app
from services.scheduler.keys import ensure_console_key
from services.scheduler.store.staff_keys import ROLES, StaffKeyStore
from shared.store.keys import Holder, key_hash, key_id
from tests.integration.test_scheduler_flow import Running, scheduler
from tests.support import MONGODB_URL, eventually
from tests.support.scheduler import DEMO_OFFICES, HW, KG, STAFF, jst, put_counsellor, scheduler_settings

CONSOLE = "css_test-console-key-0123456789abcdefghijklmnopqrstu"
CONSOLE_ID = key_id("css", key_hash(CONSOLE))


def as_person(person: str | None = None, **acting: str) -> dict[str, str]:
    """The console's key, acting for `person` with what it asserts (roles=, offices=, counsellor=)."""
    named = {"X-Acting-Person": person} if person else {}
    return {"X-Staff-Key": CONSOLE} | named | {f"X-Acting-{k.title()}": v for k, v in acting.items()}


async def console(s: Running) -> None:
    store = StaffKeyStore(s.runtime.db)
    await store.register(CONSOLE, "dev-console", ["*"], s.clock.now(), Holder(roles=ROLES, delegates=True))


async def consultctl(db_prefix: str, *args: str) -> Any:
    env = {"MONGODB_URL": MONGODB_URL, "DB_PREFIX": db_prefix, "EXTRA_OFFICES_DIR": str(DEMO_OFFICES)}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env | {"COLUMNS": "200"})


async def test_r10_the_console_key_acts_only_for_a_named_person_and_the_access_record_names_them(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        await console(s)
        kg = f"/v1/staff/offices/{KG}/counsellors"

        async def status(path: str, headers: dict[str, str]) -> int:
            return (await s.client.get(path, headers=headers)).status_code

        nobody = await s.client.get(kg, headers=as_person())
        assert nobody.status_code == 401 and "acts only for a named person" in nobody.json()["detail"]
        hanako = {"roles": "staff", "offices": KG}
        assert await status(kg, as_person("tanaka.hanako", **hanako)) == 200
        assert (
            await status(f"/v1/staff/offices/{HW}/counsellors", as_person("tanaka.hanako", **hanako)) == 403
        )
        assert await status(kg, as_person("tanaka.hanako", offices=KG)) == 403  # no role asserted: none
        assert await status(kg, as_person("tanaka.hanako", roles="staff")) == 403  # no office: none
        assert await status(kg, as_person("tanaka.hanako", roles="staff,auditor", offices=KG)) == 403
        plain = STAFF | {"X-Acting-Person": "tanaka.hanako"}
        assert await status(kg, plain) == 403  # a plain key acts for nobody else

        await s.probe.flush()

        async def logged() -> list[Any]:
            return [
                e.payload
                for e in s.probe.of("access.logged")
                if e.payload.actor == "tanaka.hanako" and e.payload.status == 200
            ]

        [record] = await eventually(logged, what="the access record of the console acting for tanaka.hanako")
        assert record.credential == CONSOLE_ID and record.route == "/v1/staff/offices/{office_id}/counsellors"


async def test_r10_a_counsellor_reads_only_their_own_schedule(
    make_settings: Callable[..., Any], amqp_url: str, db_prefix: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        await console(s)
        await put_counsellor(s.client, HW, "hw-two")
        event = s.booking.requested(HW, [(jst(2026, 11, 30, 10, 0), jst(2026, 11, 30, 10, 30))])
        await s.booking.send(event)
        booking_id = event.payload.booking_id
        (confirmed,) = await s.probe.wait("appointment.confirmed", booking_id)
        mine, theirs = "hw-one", "hw-two"
        if confirmed.payload.appointment.counsellor_id != mine:
            mine, theirs = theirs, mine

        def schedule(cid: str) -> str:
            return f"/v1/counsellors/{cid}/schedule?day=2026-11-30"

        sato = as_person("sato.counsellor", roles="counsellor", offices=HW, counsellor=mine)
        own = await s.client.get(schedule(mine), headers=sato)
        assert own.status_code == 200, own.text
        [held] = own.json()["reservations"]
        assert (held["booking_id"], held["kind"], held["status"]) == (booking_id, "booked", "confirmed")
        assert held["start"].startswith("2026-11-30T01:00") and held["meeting_url"]
        assert (await s.client.get(schedule(theirs), headers=sato)).status_code == 403
        assert (await s.client.get(schedule("kg-kushiro"), headers=sato)).status_code == 403
        assert (await s.client.get(f"/v1/staff/offices/{HW}/requests", headers=sato)).status_code == 403
        unnamed = as_person("sato.counsellor", roles="counsellor", offices=HW)
        assert (await s.client.get(schedule(mine), headers=unnamed)).status_code == 401
        not_a_counsellor = as_person("sato.counsellor", roles="staff", offices=HW, counsellor=mine)
        assert (await s.client.get(schedule(mine), headers=not_a_counsellor)).status_code == 403
        other_office = as_person("sato.counsellor", roles="counsellor", offices=KG, counsellor=mine)
        assert (await s.client.get(schedule(mine), headers=other_office)).status_code == 403

        staff = await s.client.get(schedule(theirs), headers=STAFF)  # staff read any of their office
        assert staff.status_code == 200 and staff.json()["reservations"] == []
        assert (await s.client.get(schedule(mine), headers=STAFF)).json()["reservations"] == [held]
        assert (await s.client.get(schedule("nobody"), headers=STAFF)).status_code == 404
        assert (await s.client.get(schedule(mine))).status_code == 401

        created = await consultctl(
            db_prefix, "scheduler", "staff-key", "create", "--staff", mine, "--office", HW,
            "--person", "sato.counsellor", "--role", "counsellor", "--counsellor", mine,
        )  # fmt: skip
        assert created.exit_code == 0, created.output
        plain = {"X-Staff-Key": created.stdout.strip()}
        assert (await s.client.get(schedule(mine), headers=plain)).json()["reservations"] == [held]
        assert (await s.client.get(schedule(theirs), headers=plain)).status_code == 403
        assert (await s.client.get(f"/v1/staff/offices/{HW}/counsellors", headers=plain)).status_code == 403


async def test_r11_keys_of_one_person_and_a_revoked_key_opens_nothing(
    make_settings: Callable[..., Any], amqp_url: str, db_prefix: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        create = ("scheduler", "staff-key", "create", "--staff", "kg-desk", "--office", KG)
        made = [await consultctl(db_prefix, *create, "--person", "suzuki.ichiro") for _ in range(2)]
        assert all(m.exit_code == 0 for m in made), [m.output for m in made]
        first, second = ({"X-Staff-Key": m.stdout.strip()} for m in made)
        kid = made[0].stderr.split("key id ")[1].split()[0]
        assert kid == key_id("css", key_hash(first["X-Staff-Key"]))
        kg = f"/v1/staff/offices/{KG}/counsellors"
        revoked = await consultctl(db_prefix, "scheduler", "staff-key", "revoke-key", kid)
        assert revoked.exit_code == 0 and "suzuki.ichiro" in revoked.stdout, revoked.output
        assert (await s.client.get(kg, headers=first)).status_code == 401
        assert (await s.client.get(kg, headers=second)).status_code == 200  # the person's other key
        doc = await StaffKeyStore(s.runtime.db).stored(first["X-Staff-Key"])
        assert doc is not None and doc["revoked"] and doc["revoked_by"].startswith("cli:")
        again = await consultctl(db_prefix, "scheduler", "staff-key", "revoke-key", kid)
        assert again.exit_code == 1 and "no active scheduler key" in again.output


async def test_r11_make_up_keeps_the_console_key_and_replaces_a_revoked_one(
    make_settings: Callable[..., Any], amqp_url: str, tmp_path: Path
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        settings = scheduler_settings(make_settings)
        path = tmp_path / "console-scheduler-key.txt"
        key = await ensure_console_key(path, settings)
        assert oct(path.stat().st_mode)[-3:] == "600" and await ensure_console_key(path, settings) == key
        store = StaffKeyStore(s.runtime.db)
        found = await store.find(key)
        assert found is not None and (found.person, found.delegates, found.roles) == (
            "dev-console",
            True,
            ROLES,
        )
        acting = {"X-Staff-Key": key, "X-Acting-Person": "sato.counsellor", "X-Acting-Roles": "staff",
                  "X-Acting-Offices": KG}  # fmt: skip
        assert (await s.client.get(f"/v1/staff/offices/{KG}/counsellors", headers=acting)).status_code == 200
        assert await store.revoke_key(key_id("css", key_hash(key)), s.clock.now(), "test") is not None
        fresh = await ensure_console_key(path, settings)
        assert fresh != key and path.read_text().strip() == fresh  # a revoked key is never revived
        assert await store.find(key) is None and await store.find(fresh) is not None
