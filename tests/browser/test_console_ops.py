"""The operations page in a real browser: an operator signs in, sees the message booking parked,
reads why (its body sealed), confirms the replay and sees it done; axe-core and the keyboard on the
page and on the confirmation; a staff member has no such page."""

import re

from playwright.async_api import Page, expect

from shared import topology
from tests.browser.conftest import NewPage
from tests.support import browser as b
from tests.support import eventually
from tests.support.booking import publish
from tests.support.console import accessible, signed_in_page
from tests.support.stack import ConsoleStack


async def parked_shown(page: Page) -> int:
    """The booking's parked count once the management API's figures (refreshed every few seconds)
    show at least one."""

    async def counted() -> int:
        await page.reload()
        return int(await page.locator('[data-parked="booking"]').inner_text())

    return await eventually(counted, timeout=30, interval=1.0, what="booking.parking counted on /ops")


async def test_an_operator_sees_a_parked_message_and_replays_it_after_a_confirmation(
    console: ConsoleStack, new_page: NewPage
) -> None:
    operator = await console.account("unyo.tanaka", ["operator"])
    # bytes booking cannot read as an event: parked by booking itself, for real
    await publish(console.stack.amqp_url, b"\xff not an event", topology.BOOKING.events[0], topology.EVENTS)

    page = await signed_in_page(new_page, console.url, operator)
    await page.get_by_role("link", name="運用").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("キューと保留メッセージ")
    parked = await parked_shown(page)
    await accessible(page, "ops")

    booking = page.locator("section.card", has=page.locator("#svc-booking"))
    await booking.get_by_role("button", name=re.compile("保留の理由を表示")).click()
    reasons = page.get_by_role("table", name="予約の保留メッセージ")
    await expect(reasons).to_contain_text("読み取れないイベント（invalid-event）")
    await expect(reasons).to_contain_text("封印済み")  # R12: a sealed body is never shown
    await expect(reasons).not_to_contain_text("not an event")

    booking = page.locator("section.card", has=page.locator("#svc-booking"))
    await booking.get_by_role("link", name=re.compile("再投入")).click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("保留メッセージの再投入")
    replay = page.get_by_role("button", name=re.compile(r"^\d+ 件を再投入する$"))
    # the stack is shared with the e2e suite, whose late retries may park more meanwhile: the page
    # counts again, and what it confirms is what is replayed
    shown = int((await replay.inner_text()).split()[0])
    assert shown >= parked
    await accessible(page, "ops-replay")
    await replay.focus()  # by keyboard, as an operator may
    await page.keyboard.press("Enter")
    # the service replays them all before the page answers: hundreds when the e2e suite ran first
    done = page.get_by_role("status")
    patience = b.WAIT * 1000 * (1 + shown // 50)
    await expect(done).to_contain_text(f"{shown} 件を再投入しました", timeout=patience)


async def test_a_staff_member_has_no_operations_page(console: ConsoleStack, new_page: NewPage) -> None:
    staff = await console.account("shokuin.unyo", ["staff"], ["demo-town"])
    page = await signed_in_page(new_page, console.url, staff)
    await expect(page.get_by_role("link", name="運用")).to_have_count(0)
    answer = await page.goto(f"{console.url}/ops")
    assert answer is not None and answer.status == 403
    await expect(page.get_by_role("heading", level=1)).to_contain_text("操作できません")
