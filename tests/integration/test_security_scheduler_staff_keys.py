"""Scheduler staff keys act for one office (issue 8), made and revoked with consultctl.

The scheduler runs in-process against the real broker and FerretDB; keys are created through typer's
CliRunner in the same database. A key of Hello Work (HW) is refused (403, not 401: the key is valid)
on Kushiro's (KG) office routes, on KG's requests and on KG's timers, also when what it sends would
not validate; its own office works. The development key (STAFF_API_KEY) acts for every office and
is refused in prod.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ops.cli import app
from services.scheduler.config import Settings
from tests.integration.test_scheduler_flow import Running, scheduler
from tests.support import MONGODB_URL, eventually
from tests.support.scheduler import DEMO_OFFICES, HW, KG, STAFF, jst, request_doc


async def consultctl(db_prefix: str, *args: str) -> Any:
    """As an operator would run it, in a thread (the CLI runs its own event loop)."""
    env = {"MONGODB_URL": MONGODB_URL, "DB_PREFIX": db_prefix, "EXTRA_OFFICES_DIR": str(DEMO_OFFICES)}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env | {"COLUMNS": "200"})


async def booked(s: Running, office_id: str) -> str:
    """A request the scheduler coordinates (sent as booking would), once it is stored."""
    event = s.booking.requested(office_id, [(jst(2026, 11, 30, 9, 0), jst(2026, 11, 30, 17, 0))])
    await s.booking.send(event)
    booking_id: str = event.payload.booking_id
    await eventually(lambda: request_doc(s.client, booking_id), what=f"request {booking_id}")
    return booking_id


async def test_staff_key_of_one_office_is_refused_on_another_offices_routes(
    make_settings: Callable[..., Any], amqp_url: str, db_prefix: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        created = await consultctl(
            db_prefix, "scheduler", "staff-key", "create", "--staff", "hw-desk", "--office", HW
        )
        assert created.exit_code == 0, created.output
        key = created.stdout.strip()
        assert key.startswith("css_")
        hw_desk = {"X-Staff-Key": key}
        kg_request, hw_request = await booked(s, KG), await booked(s, HW)
        c = s.client

        refused = {
            "KG counsellors": await c.get(f"/v1/staff/offices/{KG}/counsellors", headers=hw_desk),
            "KG free slots, bad query": await c.get(
                f"/v1/staff/offices/{KG}/free-slots", params={"day": "someday"}, headers=hw_desk
            ),
            "KG request": await c.get(f"/v1/staff/requests/{kg_request}", headers=hw_desk),
            "confirm KG, bad body": await c.post(
                f"/v1/staff/requests/{kg_request}/confirm", json={"start": "x"}, headers=hw_desk
            ),
            "put KG counsellor, not JSON": await c.put(
                f"/v1/staff/offices/{KG}/counsellors/kg-x",
                content=b"{not json",
                headers=hw_desk | {"content-type": "application/json"},
            ),
            "KG timers": await c.get("/v1/staff/timers", params={"office_id": KG}, headers=hw_desk),
        }
        assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 403)

        assert (await c.get(f"/v1/staff/offices/{HW}/counsellors", headers=hw_desk)).status_code == 200
        mine = await c.get(f"/v1/staff/requests/{hw_request}", headers=hw_desk)
        assert mine.status_code == 200 and mine.json()["office_id"] == HW
        timers = await c.get("/v1/staff/timers", params={"status": ""}, headers=hw_desk)
        assert timers.status_code == 200 and {t["office_id"] for t in timers.json()} == {HW}
        # the development key (every office) sees both
        every = await c.get("/v1/staff/timers", params={"status": ""}, headers=STAFF)
        assert {t["office_id"] for t in every.json()} == {HW, KG}
        assert (await c.get(f"/v1/staff/requests/{kg_request}", headers=STAFF)).status_code == 200

        revoked = await consultctl(db_prefix, "scheduler", "staff-key", "revoke", "--staff", "hw-desk")
        assert revoked.exit_code == 0 and "revoked 1 key" in revoked.output, revoked.output
        assert (await c.get(f"/v1/staff/offices/{HW}/counsellors", headers=hw_desk)).status_code == 401


async def test_r10_a_staff_key_names_its_person_in_what_they_did(
    make_settings: Callable[..., Any], amqp_url: str, db_prefix: str
) -> None:
    async with scheduler(make_settings, amqp_url) as s:
        key = await consultctl(
            db_prefix, "scheduler", "staff-key", "create", "--staff", "hw-desk", "--office", HW,
            "--name", "Yamada Taro",
        )  # fmt: skip
        assert key.exit_code == 0, key.output
        hw_desk = {"Authorization": f"Bearer {key.stdout.strip()}", "X-Staff-Id": "someone\x1b[31m"}
        hw_request = await booked(s, HW)
        doc = await eventually(lambda: _confirmed(s, hw_request), what="confirmed")
        start = jst(2026, 12, 1, 9, 0).isoformat()
        r = await s.client.post(
            f"/v1/staff/requests/{hw_request}/confirm",
            json={"counsellor_id": doc["appointment"]["counsellor_id"], "start": start},
            headers=hw_desk,
        )
        assert r.status_code == 200, r.text
        assert r.json()["confirmed_by"] == "yamada-taro"  # the person (from --name), not free text


async def _confirmed(s: Running, booking_id: str) -> dict[str, Any] | None:
    doc = await request_doc(s.client, booking_id)
    return doc if doc.get("status") == "confirmed" else None


async def test_consultctl_refuses_an_unknown_office_and_an_unknown_staff_member(
    make_settings: Callable[..., Any], amqp_url: str, db_prefix: str
) -> None:
    async with scheduler(make_settings, amqp_url):
        bad = await consultctl(
            db_prefix, "scheduler", "staff-key", "create", "--staff", "x", "--office", "nowhere"
        )
        assert bad.exit_code == 1 and "unknown office nowhere" in bad.output
        gone = await consultctl(db_prefix, "scheduler", "staff-key", "revoke", "--staff", "nobody")
        assert gone.exit_code == 1 and "no scheduler staff keys for nobody" in gone.output


def test_the_every_office_development_key_is_refused_in_prod() -> None:
    with pytest.raises(ValidationError, match="STAFF_API_KEY"):
        Settings(
            environment="prod",
            secret_key="a-real-secret-0123456789",
            amqp_url="amqp://scheduler:pw@127.0.0.1:5672/",
            staff_api_key="anything",
            meeting_dev_hosts=[],
        )
    with pytest.raises(ValidationError, match="MEETING_DEV_HOSTS"):  # R16: development rooms
        Settings(
            environment="prod",
            secret_key="a-real-secret-0123456789",
            amqp_url="amqp://scheduler:pw@x/",
            meeting_dev_hosts=["127.0.0.1"],
        )
    Settings(
        environment="prod",
        secret_key="a-real-secret-0123456789",
        amqp_url="amqp://scheduler:pw@x/",
        meeting_dev_hosts=[],
    )
