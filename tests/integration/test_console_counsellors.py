"""Staff change counsellors from the console: the console in-process calling a real scheduler (served by
uvicorn in this process, against RabbitMQ and the MongoDB-compatible server) with the console key
`make up` makes. The scheduler validates and decides; its 422/409 are shown beside the field, with
the rule (R16 apps and rooms, R20 areas); every change is an access record naming the person (R10)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.console.clients import Acting, ServiceError
from services.scheduler.app import create_app as scheduler_app
from services.scheduler.keys import ensure_console_key
from tests.support import eventually, uvicorn_serving
from tests.support.console import RunningConsole, add_account, csrf_of, running_console, sign_in
from tests.support.scheduler import HW, KG, STAFF, probe, scheduler_settings

WEEK = {"weekly_mon": "09:00-12:00、13:00-17:00", "weekly_wed": "13:00-17:00"}


@dataclass
class Desk:
    console: RunningConsole
    scheduler: httpx.AsyncClient  # the scheduler itself, with its development staff key

    async def post(self, path: str, form: dict[str, Any]) -> httpx.Response:
        """The form as the page sends it (the page's CSRF token included)."""
        page = await self.console.http.get(f"/offices/{KG}/counsellors/new")
        return await self.console.http.post(path, data={"csrf": csrf_of(page.text), **form})

    async def stored(self, office_id: str, counsellor_id: str) -> dict[str, Any]:
        r = await self.scheduler.get(
            f"/v1/staff/offices/{office_id}/counsellors", params={"include_inactive": "true"}, headers=STAFF
        )
        return next(c for c in r.json() if c["counsellor_id"] == counsellor_id)


@pytest.fixture
async def desk(make_settings: Callable[..., Any], tmp_path: Path) -> AsyncIterator[Desk]:
    settings = scheduler_settings(make_settings)
    key = await ensure_console_key(tmp_path / "console-scheduler-key.txt", settings)
    async with (
        uvicorn_serving(scheduler_app(settings)) as url,
        running_console(make_settings, scheduler_url=url, console_scheduler_key=key) as c,
        httpx.AsyncClient(base_url=url) as scheduler,
    ):
        await add_account(c.console, "yamada.taro", ["staff"], [KG])
        await add_account(c.console, "kohoku.staff", ["staff"], [HW])
        await sign_in(c.http, "yamada.taro")
        yield Desk(c, scheduler)


def field_error(html: str, key: str) -> str:
    """The text shown beside the field `key` (empty when there is none)."""
    found = re.search(rf'<p class="field-error" id="err-{re.escape(key)}">(.*?)</p>', html, re.S)
    return re.sub(r"<[^>]+>", "", found.group(1)) if found else ""


async def test_staff_register_and_change_a_counsellors_week_exceptions_areas_apps_and_email(
    desk: Desk,
) -> None:
    r = await desk.post(
        f"/offices/{KG}/counsellors",
        {
            "counsellor_id": "kg-yamada",
            "name": "山田 次郎（行政相談委員）",
            "email": "kg-yamada@kushiro-soudan.example.org",
            "organizer": "kg-yamada@kushiro-soudan.example.org",
            "active": "on",
            "areas": ["釧路", "十勝"],
            "apps": ["teams"],
            **WEEK,
            "exc_date": ["2026-12-25", "2026-12-28", ""],
            "exc_spans": ["", "09:00-12:00", ""],
            "exc_note": ["休暇", "午前のみ", ""],
        },
    )
    assert r.status_code == 303 and r.headers["location"].endswith(
        "/counsellors/kg-yamada?done=counsellor-saved"
    )
    c = await desk.stored(KG, "kg-yamada")
    assert c["weekly"] == {"mon": ["09:00-12:00", "13:00-17:00"], "wed": ["13:00-17:00"]}
    assert c["exceptions"] == [
        {"date": "2026-12-25", "spans": [], "note": "休暇"},
        {"date": "2026-12-28", "spans": ["09:00-12:00"], "note": "午前のみ"},
    ]
    assert (c["areas"], c["apps"], c["email"]) == (
        ["釧路", "十勝"],
        ["teams"],
        "kg-yamada@kushiro-soudan.example.org",
    )

    page = await desk.console.http.get(f"/offices/{KG}/counsellors/kg-yamada")
    assert page.status_code == 200 and 'value="09:00-12:00、13:00-17:00"' in page.text
    r = await desk.post(
        f"/offices/{KG}/counsellors/kg-yamada",
        {"name": "山田 次郎", "active": "on", "areas": ["根室"], "weekly_fri": "10:00-11:00"},
    )
    assert r.status_code == 303
    c = await desk.stored(KG, "kg-yamada")
    assert (c["weekly"], c["exceptions"], c["areas"], c["apps"], c["email"]) == (
        {"fri": ["10:00-11:00"]},
        [],
        ["根室"],
        [],
        None,
    )


async def test_r20_an_area_the_office_does_not_serve_is_shown_beside_the_areas(desk: Desk) -> None:
    form = {"counsellor_id": "kg-area", "name": "地域 なし", "active": "on", **WEEK}
    r = await desk.post(f"/offices/{KG}/counsellors", form)  # KG's commissioners serve areas: none named
    assert r.status_code == 422
    assert field_error(r.text, "areas").startswith("R20：")
    r = await desk.post(f"/offices/{KG}/counsellors", {**form, "areas": ["札幌"]})
    assert r.status_code == 422 and "R20" in field_error(r.text, "areas") and "札幌" in r.text
    assert 'value="地域 なし"' in r.text  # what was typed is kept
    r = await desk.scheduler.get(f"/v1/staff/offices/{KG}/counsellors", headers=STAFF)
    assert "kg-area" not in {c["counsellor_id"] for c in r.json()}


async def test_r16_an_app_the_office_does_not_use_is_shown_beside_the_apps(desk: Desk) -> None:
    form = {"counsellor_id": "kg-app", "name": "アプリ 違い", "areas": ["釧路"], "apps": ["teleoffice"]}
    r = await desk.post(f"/offices/{KG}/counsellors", form)
    assert r.status_code == 422 and field_error(r.text, "apps").startswith("R16：")


async def test_a_wrong_span_or_date_is_shown_beside_its_weekday_or_exception(desk: Desk) -> None:
    form = {"counsellor_id": "kg-span", "name": "時間 違い", "areas": ["釧路"], "weekly_tue": "17:00-09:00"}
    r = await desk.post(f"/offices/{KG}/counsellors", form)
    assert r.status_code == 422 and "開始を終了より前" in field_error(r.text, "weekly")
    assert 'value="17:00-09:00"' in r.text
    form = {**form, "weekly_tue": "09:00-12:00", "exc_date": ["2026-12-24"], "exc_spans": ["9時から"]}
    r = await desk.post(f"/offices/{KG}/counsellors", {**form, "exc_note": [""]})
    assert r.status_code == 422 and "日付と時間帯" in field_error(r.text, "exceptions-0")


async def test_a_counsellor_id_of_another_office_is_refused_409_beside_the_id(desk: Desk) -> None:
    await sign_in(desk.console.http, "kohoku.staff")
    r = await desk.console.http.get(f"/offices/{HW}/counsellors/new")
    form = {
        "csrf": csrf_of(r.text),
        "counsellor_id": "kg-sato",
        "name": "同じ ID",
        "weekly_mon": "09:00-12:00",
    }
    put = {"name": "佐藤", "areas": ["釧路"], "weekly": {"mon": ["09:00-12:00"]}}
    await desk.scheduler.put(f"/v1/staff/offices/{KG}/counsellors/kg-sato", json=put, headers=STAFF)
    r = await desk.console.http.post(f"/offices/{HW}/counsellors", data=form)
    assert r.status_code == 409 and "別の事務所" in field_error(r.text, "counsellor_id")


async def test_r16_rooms_are_registered_checked_and_deleted(desk: Desk) -> None:
    await sign_in(desk.console.http, "kohoku.staff")
    page = await desk.console.http.get(f"/offices/{HW}/counsellors/new")
    csrf = csrf_of(page.text)
    form = {
        "csrf": csrf,
        "counsellor_id": "hw-room",
        "name": "部屋 あり",
        "active": "on",
        "weekly_mon": "09:00-17:00",
    }
    assert (await desk.console.http.post(f"/offices/{HW}/counsellors", data=form)).status_code == 303
    path = f"/offices/{HW}/counsellors/hw-room/rooms"
    room = {"csrf": csrf, "room_id": "room-1", "app": "teleoffice", "meeting_id": "401 1"}
    r = await desk.console.http.post(path, data={**room, "join_url": "https://evil.example.net/r/1"})
    assert r.status_code == 422 and field_error(r.text, "room").startswith("R16：")
    assert "evil.example.net" in r.text  # the scheduler's words beneath
    r = await desk.console.http.post(path, data={**room, "join_url": "https://teleoffice.example.org/r/1"})
    assert r.status_code == 303
    assert [x["room_id"] for x in (await desk.stored(HW, "hw-room"))["rooms"]] == ["room-1"]

    r = await desk.console.http.post(  # saving the counsellor keeps the rooms (they have routes of their own)
        f"/offices/{HW}/counsellors/hw-room", data={**form, "weekly_tue": "09:00-12:00"}
    )
    assert r.status_code == 303 and len((await desk.stored(HW, "hw-room"))["rooms"]) == 1
    r = await desk.console.http.post(f"{path}/room-1/delete", data={"csrf": csrf})
    assert r.status_code == 303 and (await desk.stored(HW, "hw-room"))["rooms"] == []
    r = await desk.console.http.post(f"{path}/room-1/delete", data={"csrf": csrf})
    assert r.status_code == 404 and "処理できませんでした" in r.text  # the scheduler's refusal, shown


async def test_retiring_keeps_the_counsellor_for_the_records(desk: Desk) -> None:
    form = {"counsellor_id": "kg-retire", "name": "退任 予定", "active": "on", "areas": ["十勝"], **WEEK}
    assert (await desk.post(f"/offices/{KG}/counsellors", form)).status_code == 303
    r = await desk.post(f"/offices/{KG}/counsellors/kg-retire/retire", {})
    assert r.status_code == 303
    assert (await desk.stored(KG, "kg-retire"))["active"] is False
    listing = await desk.console.http.get(f"/offices/{KG}/counsellors")
    assert "退任 予定" in listing.text and "受付停止" in listing.text


async def test_staff_of_another_office_are_refused_by_the_console_and_by_the_scheduler(desk: Desk) -> None:
    r = await desk.post(f"/offices/{HW}/counsellors", {"counsellor_id": "hw-x", "name": "x"})
    assert r.status_code == 403 and "権限" in r.text
    assert (await desk.console.http.get(f"/offices/{HW}/counsellors/hw-tanaka")).status_code == 403
    kg_staff = Acting("yamada.taro", ("staff",), (KG,))
    with pytest.raises(ServiceError) as refused:  # the scheduler decides as well
        await desk.console.console.clients.scheduler.put_counsellor(HW, "hw-x", {"name": "x"}, kg_staff)
    assert refused.value.status == 403


async def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(desk: Desk) -> None:
    form = {"counsellor_id": "kg-csrf", "name": "トークン なし", "areas": ["釧路"]}
    r = await desk.console.http.post(f"/offices/{KG}/counsellors", data=form)
    assert r.status_code == 403
    r = await desk.scheduler.get(f"/v1/staff/offices/{KG}/counsellors", headers=STAFF)
    assert "kg-csrf" not in {c["counsellor_id"] for c in r.json()}


async def test_r10_each_change_is_an_access_record_naming_the_person_in_the_console_and_the_scheduler(
    desk: Desk, amqp_url: str
) -> None:
    form = {"counsellor_id": "kg-r10", "name": "記録 確認", "active": "on", "areas": ["釧路"], **WEEK}
    async with probe(amqp_url, "access.logged") as seen:
        assert (await desk.post(f"/offices/{KG}/counsellors", form)).status_code == 303
        assert (await desk.post(f"/offices/{KG}/counsellors/kg-r10/retire", {})).status_code == 303

        async def recorded() -> set[tuple[str, str, str, str, int]]:
            got = {
                (e.payload.service, e.payload.actor, e.payload.method, e.payload.route, e.payload.status)
                for e in seen.events
            }
            return got if len({g for g in got if g[0] == "scheduler"}) >= 2 else set()

        got = await eventually(recorded, timeout=15, what="the console's and the scheduler's access records")
    assert ("console", "yamada.taro", "POST", "/offices/{office_id}/counsellors", 303) in got
    assert (
        "console",
        "yamada.taro",
        "POST",
        "/offices/{office_id}/counsellors/{counsellor_id}/retire",
        303,
    ) in got
    assert {g[1] for g in got if g[0] == "scheduler" and g[2] in ("PUT", "DELETE")} == {"yamada.taro"}
