"""Pages in a real browser: one Debian Chromium for the whole run, a fresh context for every page.

    browser      Chromium (Playwright async API), started once for all of tests/browser
    new_page     new_page(**context_options) -> Page: a page in a context of its own (its own cookies,
                 so two people can be signed in at once); closed when the test ends
    page         one such page
    browser_assets  the npm files the console serves and the tests inject (htmx, axe-core)
    stack, console  the services and the console as real processes (tests/support/stack.py)

Every context is Japanese (ja-JP, Asia/Tokyo, 1280x800) unless the test passes other options, such
as tests.support.browser.ZOOM_200 or TABLET. When a test fails, its report shows each page's URL,
its errors and refused requests, and the start of its text. The checks a test runs on a page are in
tests/support/browser.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.support import browser as b

NewPage = Callable[..., Awaitable[Page]]
_call_report = pytest.StashKey[pytest.TestReport]()

expect.set_options(timeout=b.WAIT * 1000)  # Playwright's own `expect` waits as long as `wait_for`


@pytest.fixture(scope="package")  # closed after the last browser test: the later suites run without it
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        try:
            chromium = await b.launch(pw)
        except FileNotFoundError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield chromium
        await chromium.close()


@pytest.fixture(scope="session")
def browser_assets() -> dict[str, Path]:
    """htmx (served by the console) and axe-core (run in its pages), as npm ci installed them."""
    try:
        return {"htmx": b.asset(b.HTMX_JS), "axe": b.asset(b.AXE_JS)}
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
async def new_page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[NewPage]:
    contexts: list[BrowserContext] = []

    async def open_page(**context_options: Any) -> Page:
        context = await browser.new_context(**{**b.CONTEXT, **context_options})
        context.set_default_timeout(b.ACTION_TIMEOUT * 1000)
        context.on("page", b.watch)  # pages the page opens are watched too
        contexts.append(context)
        return await context.new_page()

    yield open_page
    report = request.node.stash.get(_call_report, None)
    if report is not None and report.failed:
        for n, page in enumerate(p for c in contexts for p in c.pages):
            report.sections.append((f"browser page {n + 1}", await b.failure_report(page)))
    for context in contexts:
        await context.close()


@pytest.fixture
async def page(new_page: NewPage) -> Page:
    return await new_page()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":  # `new_page` adds the pages' state to it when the test failed
        item.stash[_call_report] = report
    return report
