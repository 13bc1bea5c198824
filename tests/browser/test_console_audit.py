"""The auditors' console in a real browser: record search, chain verification, statistics, and a
legal disclosure (R11) that the person who requested it cannot approve and a second person can."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser.conftest import NewPage
from tests.support.console import accessible, signed_in_page
from tests.support.stack import ConsoleStack


async def test_r11_a_disclosure_is_approved_only_by_a_second_person(
    console: ConsoleStack, new_page: NewPage
) -> None:
    requester = await console.account("kansa.ichiro", ["auditor", "disclosure-approver"])
    second = await console.account("kansa.jiro", ["disclosure-approver"])
    page = await signed_in_page(new_page, console.url, requester)
    await expect(page).to_have_url(f"{console.url}/audit/records")
    await page.get_by_role("link", name="開示請求").click()
    await accessible(page, "audit-disclosures")

    await page.get_by_label("根拠法令（必須）").fill("刑事訴訟法第197条第2項")
    await page.get_by_label("請求機関（必須）").fill("北海道警察釧路方面本部")
    await page.get_by_label("文書番号（必須）").fill("釧方刑第1234号")
    await page.get_by_label("端末の仮名").fill("dev-0123456789abcdef")
    await page.get_by_role("button", name="開示請求を登録").click()
    await expect(page.get_by_role("status")).to_contain_text("開示請求を登録しました")
    await expect(page.locator(".badge")).to_have_text("承認待ち")
    detail = page.url

    await page.get_by_role("button", name="承認する").click()  # four eyes: refused by audit
    await expect(page.get_by_role("alert")).to_contain_text("登録した人とは別の人")
    await expect(page.locator(".badge")).to_have_text("承認待ち")
    await accessible(page)

    other = await signed_in_page(new_page, console.url, second)
    await other.goto(detail)
    await other.get_by_label("判断の理由").fill("令状を確認した")
    await other.get_by_role("button", name="承認する").click()
    await expect(other.get_by_role("status")).to_contain_text("承認しました")
    await expect(other.locator(".badge")).to_have_text("承認済み")
    await expect(other.locator("dl")).to_contain_text("kansa.jiro")
    await accessible(other, "audit-disclosure")


async def test_an_auditor_searches_records_pages_by_cursor_and_verifies_the_chain(
    console: ConsoleStack, new_page: NewPage
) -> None:
    auditor = await console.account("kansa.saburo", ["auditor"])
    page = await signed_in_page(new_page, console.url, auditor)
    await page.get_by_label("種類").fill("access.logged")
    await page.get_by_role("button", name="検索").click()
    await expect(page.locator("tbody tr").first).to_be_visible()
    await accessible(page, "audit-records")
    if await page.get_by_role("link", name="次の50件").count():
        first = await page.locator("tbody tr").first.inner_text()
        await page.get_by_role("link", name="次の50件").click()
        assert await page.locator("tbody tr").first.inner_text() != first

    await page.get_by_role("link", name="改ざん検証").click()
    await page.get_by_role("button", name="検証する").click()
    await expect(page.get_by_role("status")).to_contain_text("改ざんされていません")
    await accessible(page, "audit-verify")

    await page.get_by_role("link", name="統計").click()
    await page.get_by_role("button", name="集計").click()
    await expect(page.locator("main")).to_contain_text("表示しません（R11）")
    await accessible(page)
