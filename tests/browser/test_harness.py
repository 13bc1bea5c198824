"""The browser checks themselves: each one fails on a page that is wrong and passes on one that is right.

A small site on a free loopback port (uvicorn, in this process) serves the pages with the strict
Content-Security-Policy the console keeps (no inline script or style), and htmx from node_modules as
the console serves it. No server of the project is needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from playwright.async_api import Browser, Page, expect

from tests import support
from tests.browser.conftest import NewPage
from tests.support import browser as b

CSP = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"
CSS = """
body { font-family: sans-serif; margin: 1rem; color: #1a1a1a; background: #fff; }
.faint { color: #c8c8c8; }
.wide { width: 1000px; }
"""


def layout(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{{"includeIndicatorStyles": false}}'>
<link rel="stylesheet" href="/assets/harness.css"><script src="/assets/htmx.min.js"></script>
</head><body><main><h1>{title}</h1>{body}</main></body></html>"""


PAGES = {
    # htmx swaps the fragment into #out; every control is reachable by Tab
    "/": layout(
        "本日の相談",
        '<p>窓口の予定です。</p><button id="load" type="button" hx-get="/fragment" hx-target="#out">'
        '予定を読み込む</button> <a id="home" href="/">トップへ</a>'
        '<div id="out" aria-live="polite"></div>'
        '<div hx-get="/fragment" hx-trigger="every 600s" hx-target="#out"></div>',
    ),
    # axe-core: text whose contrast is 1.7:1 (color-contrast, serious)
    "/faint": layout("相談の一覧", '<p id="faint" class="faint">薄くて読めない注記</p>'),
    # the keyboard: a link taken out of the Tab order, an ARIA button and a clickable row not in it
    "/unreachable": layout(
        "調整待ち",
        '<button id="ok" type="button">確定</button><a id="skipped" href="/" tabindex="-1">詳細</a>'
        '<div id="fake" role="button">取消</div>'
        '<table><tr id="row" hx-get="/fragment"><td>12月4日</td></tr></table>',
    ),
    # 200 % zoom: a fixed 1000 px block forces sideways scrolling
    "/wide": layout("週の予定", '<div class="wide">月 火 水 木 金</div>'),
    # a script that throws while the page starts
    "/broken": layout("壊れた画面", '<script src="/assets/broken.js"></script>'),
}


def site() -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def csp(request: Request, call_next):  # type: ignore[no-untyped-def]
        response: Response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        return response

    @app.get("/assets/htmx.min.js")
    async def htmx() -> FileResponse:
        return FileResponse(b.asset(b.HTMX_JS), media_type="text/javascript")

    @app.get("/assets/harness.css")
    async def css() -> PlainTextResponse:
        return PlainTextResponse(CSS, media_type="text/css")

    @app.get("/assets/broken.js")
    async def broken() -> PlainTextResponse:
        return PlainTextResponse("throw new Error('画面の初期化に失敗');", media_type="text/javascript")

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/fragment")
    async def fragment(request: Request) -> HTMLResponse:
        if request.headers.get("HX-Request") != "true":  # only htmx asks for a fragment
            return HTMLResponse("not an htmx request", status_code=400)
        return HTMLResponse('<p id="swapped">2026年12月4日(金) 10:00 確定</p>')

    for path, html in PAGES.items():
        app.add_api_route(path, lambda html=html: HTMLResponse(html), methods=["GET"])
    return app


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    async with support.uvicorn_serving(site()) as url:
        yield url


async def visit(page: Page, base_url: str, path: str) -> Page:
    response = await page.goto(base_url + path)
    assert response is not None and response.headers["content-security-policy"] == CSP
    return page


async def test_axe_finds_a_serious_violation_under_the_pages_csp(page: Page, base_url: str) -> None:
    await visit(page, base_url, "/faint")
    found = await b.axe_violations(page)
    assert [(v.rule, v.impact, v.targets) for v in found] == [("color-contrast", "serious", ("#faint",))]
    assert "contrast" in found[0].summary and "color-contrast" in str(found[0])
    assert await b.axe_violations(page, ("critical",)) == []  # impacts filter
    assert await b.axe_violations(page, disable=("color-contrast",)) == []


async def test_axe_passes_an_accessible_page(page: Page, base_url: str) -> None:
    await visit(page, base_url, "/")
    assert await b.axe_violations(page, ("minor", "moderate", "serious", "critical")) == []


async def test_htmx_from_npm_swaps_a_fragment_in_the_browser(page: Page, base_url: str) -> None:
    await visit(page, base_url, "/")
    assert await page.evaluate("() => htmx.version") == b.package_version("htmx.org")
    await page.get_by_role("button", name="予定を読み込む").click()
    await expect(page.locator("#out #swapped"), "the fragment htmx swaps in").to_have_text(
        "2026年12月4日(金) 10:00 確定"
    )
    assert b.page_errors(page) == []  # htmx ran under the CSP without a refused script or style


async def test_the_keyboard_reaches_every_control_and_enter_acts(page: Page, base_url: str) -> None:
    await visit(page, base_url, "/")
    assert await b.keyboard_unreached(page) == []
    assert await b.keyboard_unreached(page, ["#load", "a"]) == []
    await page.locator("#load").focus()
    await page.keyboard.press("Enter")
    await b.wait_for(page.locator("#swapped"), "the fragment after Enter on 予定を読み込む")


async def test_the_keyboard_check_names_what_tab_never_reaches(page: Page, base_url: str) -> None:
    await visit(page, base_url, "/unreachable")
    assert await b.keyboard_unreached(page) == ['a#skipped "詳細"', 'div#fake "取消"', 'tr#row "12月4日"']
    assert await b.keyboard_unreached(page, ["#ok", "#fake", "#missing"]) == [
        '#fake: div#fake "取消"',
        "#missing: matches no visible element",
    ]


async def test_waiting_fails_naming_what_was_awaited(page: Page, base_url: str) -> None:
    await visit(page, base_url, "/")
    with pytest.raises(AssertionError, match="waiting for the confirmation banner"):
        await b.wait_for(page.locator("#banner"), "the confirmation banner", timeout=0.3)
    with pytest.raises(AssertionError, match="waiting for the queue to refresh"):
        await b.wait_until(page, "() => window.refreshed", "the queue to refresh", timeout=0.3)
    assert await b.wait_until(page, "() => document.title", "the title") == "本日の相談"


async def test_every_page_is_japanese_in_its_own_context(page: Page, browser: Browser, base_url: str) -> None:
    await visit(page, base_url, "/")
    seen = await page.evaluate(
        """() => [navigator.language, Intl.DateTimeFormat().resolvedOptions().timeZone,
                  new Date(Date.UTC(2026, 11, 4, 1, 0)).toLocaleString()]"""
    )
    assert seen == ["ja-JP", "Asia/Tokyo", "2026/12/4 10:00:00"]  # 01:00 UTC is 10:00 JST
    assert browser.contexts == [page.context]  # no page of an earlier test is left open


async def test_two_pages_have_separate_cookies(new_page: NewPage, base_url: str) -> None:
    first, second = await new_page(), await new_page()
    await visit(first, base_url, "/")
    await first.context.add_cookies([{"name": "session", "value": "staff-a", "url": base_url}])
    assert [c["value"] for c in await first.context.cookies()] == ["staff-a"]
    assert await second.context.cookies() == []


async def test_zoom_200_shows_sideways_scrolling(new_page: NewPage, base_url: str) -> None:
    zoomed = await new_page(**b.ZOOM_200)
    await visit(zoomed, base_url, "/")
    assert await zoomed.evaluate("() => [innerWidth, devicePixelRatio]") == [640, 2]
    assert await b.horizontal_overflow(zoomed) == 0
    await visit(zoomed, base_url, "/wide")
    assert await b.horizontal_overflow(zoomed) > 300


async def test_page_errors_are_kept(page: Page, base_url: str) -> None:
    await visit(page, base_url, "/broken")
    await b.wait_until(page, "() => document.readyState === 'complete'", "the page to load")
    assert any("画面の初期化に失敗" in e for e in b.page_errors(page)), b.page_log(page)


async def test_screenshot_writes_a_png(page: Page, base_url: str, tmp_path: Path) -> None:
    await visit(page, base_url, "/")
    path = await b.screenshot(page, "harness-today", directory=tmp_path / "console")
    assert path == tmp_path / "console" / "harness-today.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="a-z, 0-9"):
        await b.screenshot(page, "../today", directory=tmp_path)


def test_the_assets_are_the_locked_versions(browser_assets: dict[str, Path]) -> None:
    import json

    lock = json.loads((b.ROOT / "package-lock.json").read_text(encoding="utf-8"))["packages"]
    for package in ("htmx.org", "axe-core"):
        assert b.package_version(package) == lock[f"node_modules/{package}"]["version"]
    assert browser_assets["htmx"].name == "htmx.min.js" and browser_assets["axe"].name == "axe.min.js"
