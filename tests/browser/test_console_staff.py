"""The offices' console in a real browser, as people use it: a staff member signs in, confirms a waiting
request, records a same-day phone cancellation and sees why an email one is refused; a counsellor
sees only their own schedule; staff of one office cannot see another's; a post without its CSRF
token, or after the session ended, is refused. axe-core and the keyboard on every screen.

Bookings are made in the demo office (open every day, a 1-minute grid; deploy/offices-demo), as a
portal makes them, on the services and the console running as processes."""

import re
from datetime import datetime, time, timedelta
from typing import Any

import pytest
from playwright.async_api import expect

from examples import forms
from services.booking.config import Settings as BookingSettings
from shared.clock import JST, SystemClock
from tests.browser.conftest import NewPage
from tests.support import eventually
from tests.support.browser import TABLET, ZOOM_200, horizontal_overflow
from tests.support.console import DEMO, DEMO_KUSHIRO, DEMO_NEMURO, ROOT, accessible, signed_in_page
from tests.support.stack import BOOKING_STAFF_KEY, PORTAL_KEY, ConsoleStack, Stack

CONFIRM = re.compile("^確定")
PORTAL = {"Authorization": f"Bearer {PORTAL_KEY}"}
STAFF_KEY = {"Authorization": f"Bearer {BOOKING_STAFF_KEY}"}


async def book(
    stack: Stack, office: str, start: datetime, *, address: str = DEMO_NEMURO, minutes: int = 30
) -> str:
    """A booking of the demo office for exactly [start, start + minutes), as a portal makes it; its id.
    根室 by default: demo-ito's, in a pre-issued TeleOffice room (R16)."""
    policy = BookingSettings(extra_offices_dir=ROOT / "deploy" / "offices-demo").policies()[office]
    day = start.astimezone(JST).date()
    window = (
        f"{start.astimezone(JST):%H:%M}",
        f"{(start + timedelta(minutes=minutes)).astimezone(JST):%H:%M}",
    )
    form = forms.kg_form(policy, day, SystemClock().now(), window=window, address=address)
    async with stack.client("booking", headers=PORTAL) as portal:
        r = await portal.post(f"/v1/offices/{office}/bookings", json=form)
    assert r.status_code == 202, r.text
    return str(r.json()["booking_id"])


async def status_of(stack: Stack, booking_id: str, *wanted: str) -> dict[str, Any]:
    """The booking (staff's view) once its status is one of `wanted`."""

    async def reached() -> dict[str, Any] | None:
        async with stack.client("booking", headers=STAFF_KEY) as c:
            b = (await c.get(f"/v1/bookings/{booking_id}")).json()
        return b if b.get("status") in wanted else None

    return await eventually(reached, timeout=30, what=f"booking {booking_id} {' or '.join(wanted)}")


def day_ahead(days: int, hhmm: str) -> datetime:
    """An instant `days` from today (JST) at hh:mm JST."""
    today = SystemClock().now().astimezone(JST).date()
    return datetime.combine(today + timedelta(days=days), time.fromisoformat(hhmm), JST)


def later_today(minutes: int) -> datetime:
    """A whole minute at least `minutes` from now, still today in JST (or the test cannot run today)."""
    now = SystemClock().now().astimezone(JST)
    start = (now + timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    if (start + timedelta(minutes=31)).date() != now.date():
        pytest.skip("no consultation fits before midnight JST: the same-day rule needs one today")
    return start


async def test_r05_a_staff_member_signs_in_and_confirms_a_waiting_request(
    console: ConsoleStack, new_page: NewPage
) -> None:
    staff = await console.account("shokuin.kakunin", ["staff"], [DEMO])
    start = day_ahead(2, "10:00")
    taken = await book(console.stack, DEMO, start)
    await status_of(console.stack, taken, "confirmed")
    waiting = await book(console.stack, DEMO, start)  # the same half hour: its counsellor is busy
    await status_of(console.stack, waiting, "recoordination_proposed", "awaiting_coordination")

    page = await signed_in_page(new_page, console.url, staff)
    await expect(page.get_by_role("heading", level=1)).to_contain_text("の相談")
    await accessible(page, "today")
    await page.get_by_role("link", name="調整待ち").click()
    await expect(page.locator(f'a[href$="/coordination/{waiting}"]')).to_be_visible()
    await accessible(page, "coordination")
    await page.locator(f'a[href$="/coordination/{waiting}"]').click()
    await expect(page.get_by_role("heading", name=re.compile("の空き枠"))).to_be_visible()
    await accessible(page, "coordination-request")

    after = (start + timedelta(minutes=30)).strftime("%H:%M")
    await page.locator("tr", has_text=f"{after}〜").get_by_role("button", name=CONFIRM).click()
    await expect(page.get_by_role("status")).to_contain_text("予約を確定しました")
    confirmed = await status_of(console.stack, waiting, "confirmed")
    assert confirmed["appointment"]["start"].startswith(f"{(start + timedelta(minutes=30)):%Y-%m-%dT}")
    assert await page.locator(f'a[href$="/coordination/{waiting}"]').count() == 0  # left the queue
    await page.get_by_role("link", name="相談員").click()
    await expect(page.get_by_role("heading", name=re.compile("伊藤 翔"))).to_be_visible()
    await accessible(page, "counsellors")


async def test_r07_staff_record_a_same_day_phone_cancellation_and_see_why_email_is_refused(
    console: ConsoleStack, new_page: NewPage
) -> None:
    staff = await console.account("shokuin.torikeshi", ["staff"], [DEMO])
    booking = await book(console.stack, DEMO, later_today(20))
    await status_of(console.stack, booking, "confirmed")
    page = await signed_in_page(new_page, console.url, staff)
    await page.goto(f"{console.url}/bookings/{booking}")
    await expect(page.locator("main")).to_contain_text("釧路 太郎")  # the person, for staff only
    assert "釧路" not in page.url
    await accessible(page, "booking")

    await page.get_by_label("連絡方法（R07）").select_option("email")
    await page.get_by_role("button", name="キャンセルを記録").click()
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("R07")
    await expect(alert).to_contain_text("電話")  # booking's how-to-cancel: phone on the day itself
    await expect(page.locator(".badge").first).to_have_text("確定")
    await accessible(page)

    await page.get_by_label("連絡方法（R07）").select_option("phone")
    await page.get_by_role("button", name="キャンセルを記録").click()
    await expect(page.get_by_role("status")).to_contain_text("キャンセルを記録しました")
    await expect(page.locator(".badge").first).to_have_text("キャンセル")
    cancelled = await status_of(console.stack, booking, "cancelled")
    assert cancelled["cancellation"]["channel"] == "phone"
    assert cancelled["cancellation"]["recorded_by"] == staff  # the person, through the console


async def test_a_counsellor_sees_only_their_own_schedule(console: ConsoleStack, new_page: NewPage) -> None:
    ito = await console.account("ito.sho", ["counsellor"], [DEMO], counsellor="demo-ito")
    start = day_ahead(3, "14:00")
    mine = await book(console.stack, DEMO, start)  # 根室: demo-ito
    theirs = await book(console.stack, DEMO, start, address=DEMO_KUSHIRO)  # 釧路: demo-aoki (Teams)
    await status_of(console.stack, mine, "confirmed")
    await status_of(console.stack, theirs, "confirmed")
    page = await signed_in_page(new_page, console.url, ito)
    await expect(page).to_have_url(re.compile("/my/schedule$"))
    await page.get_by_label("日付").fill(start.date().isoformat())
    await page.get_by_role("button", name="表示").click()
    rows = page.locator("tbody tr", has_text="14:00〜14:30")
    await expect(rows).to_have_count(1)  # demo-aoki's consultation at the same time is not shown
    await accessible(page, "schedule")
    refused = await page.goto(f"{console.url}/offices/{DEMO}/today")
    assert refused is not None and refused.status == 403


async def test_staff_of_one_office_cannot_see_another_office(
    console: ConsoleStack, new_page: NewPage
) -> None:
    kg = await console.account("shokuin.kushiro", ["staff"], ["kushiro-gyosei"])
    demo_booking = await book(console.stack, DEMO, day_ahead(4, "09:00"))
    page = await signed_in_page(new_page, console.url, kg)
    paths = ("today", "coordination", "refusals", "counsellors")
    for path in (*(f"/offices/{DEMO}/{p}" for p in paths), f"/bookings/{demo_booking}"):
        answer = await page.goto(f"{console.url}{path}")
        assert answer is not None and answer.status == 403, path
        await expect(page.locator("main")).not_to_contain_text("釧路 太郎")
    await expect(page.locator("main")).to_contain_text("権限")
    await accessible(page)


async def test_posts_without_the_csrf_token_or_after_the_session_ended_are_refused(
    console: ConsoleStack, new_page: NewPage
) -> None:
    staff = await console.account("shokuin.csrf", ["staff"], [DEMO])
    booking = await book(console.stack, DEMO, day_ahead(5, "11:00"))
    await status_of(console.stack, booking, "confirmed")
    page = await signed_in_page(new_page, console.url, staff)
    await page.goto(f"{console.url}/bookings/{booking}")
    await page.locator('form[action$="/cancellations"] input[name="csrf"]').evaluate("e => e.remove()")
    await page.get_by_role("button", name="キャンセルを記録").click()
    await expect(page.locator("main")).to_contain_text("フォームの有効期限が切れたか、不正な送信です")
    assert (await status_of(console.stack, booking, "confirmed"))["status"] == "confirmed"

    await page.goto(f"{console.url}/bookings/{booking}")
    await console.age_sessions_of(staff)  # as if the idle timeout had passed
    await page.get_by_role("button", name="キャンセルを記録").click()
    await expect(page.locator("main")).to_contain_text("もう一度サインインしてください")
    assert (await status_of(console.stack, booking, "confirmed"))["status"] == "confirmed"


async def test_the_today_screen_reflows_at_200_percent_zoom_and_on_a_tablet(
    console: ConsoleStack, new_page: NewPage
) -> None:
    staff = await console.account("shokuin.zoom", ["staff"], [DEMO])
    for options, name in ((ZOOM_200, "today-zoom200"), (TABLET, "today-tablet")):
        page = await signed_in_page(new_page, console.url, staff, **options)
        await expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert await horizontal_overflow(page) == 0, name
        await accessible(page, name)
