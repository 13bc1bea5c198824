"""The console in tests: in-process against the real servers (tests/integration/test_console_*), and
what every console test does: make an account, sign in, read a form's CSRF token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page

from services.console.accounts import new_account
from services.console.app import create_app
from services.console.config import Settings
from services.console.web import Console
from shared.clock import Clock, FixedClock
from tests.support import serve
from tests.support.browser import axe_violations, keyboard_unreached, page_errors, screenshot

T0 = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)  # 2026-12-04 (Fri) 10:00 JST
PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ROOT = Path(__file__).resolve().parents[2]
#: addresses in the demo office's areas: 釧路 is demo-aoki's, 根室 demo-ito's (deploy/counsellors.yaml)
DEMO_KUSHIRO, DEMO_NEMURO = "北海道釧路市黒金町7-5", "北海道根室市常盤町2-1"
DEMO = "demo-town"


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = CSRF.search(html)
    assert found, f"no CSRF field on the page: {html[:300]}"
    return found.group(1)


async def add_account(
    console: Console,
    person_id: str,
    roles: list[str],
    offices: list[str] | None = None,
    counsellor_id: str | None = None,
    *,
    name: str = "テスト 職員",
    password: str = PASSWORD,
    now: datetime = T0,
) -> None:
    account = new_account(
        person_id=person_id,
        name=name,
        roles=roles,
        password=password,
        offices=offices or [],
        counsellor_id=counsellor_id,
        known_offices=set(console.office_names),
        now=now,
    )
    await console.stores.accounts.create(account)


async def sign_in(
    http: httpx.AsyncClient, person_id: str, password: str = PASSWORD, totp: str = ""
) -> httpx.Response:
    """The sign-in form filled in and sent, as a browser does (its CSRF nonce cookie included)."""
    page = await http.get("/signin")
    form = {"csrf": csrf_of(page.text), "person_id": person_id, "password": password, "totp": totp}
    return await http.post("/signin", data=form)


@dataclass
class RunningConsole:
    http: httpx.AsyncClient
    console: Console
    clock: FixedClock
    settings: Settings

    def client(self, *, tls: bool = False) -> httpx.AsyncClient:
        """Another browser: its own cookies, the same app (`tls`: as if served over https)."""
        base = "https://service" if tls else str(self.http.base_url)
        return httpx.AsyncClient(transport=self.http._transport, base_url=base)


@asynccontextmanager
async def running_console(
    make_settings: Callable[..., Any], clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[RunningConsole]:
    """The console in-process; the services it calls are wherever `overrides` say (none by default:
    its pages then show that the service could not be reached)."""
    values: dict[str, Any] = {
        "booking_url": "http://127.0.0.1:9",
        "scheduler_url": "http://127.0.0.1:9",
        "audit_url": "http://127.0.0.1:9",
        "notifier_url": "http://127.0.0.1:9",
        "console_booking_key": "none",
        "console_scheduler_key": "none",
        "console_audit_key": "none",
        "console_notifier_key": "none",
        **overrides,
    }
    settings: Settings = make_settings(Settings, **values)
    fixed = clock or FixedClock(T0)
    app = create_app(settings, fixed)
    async with serve(app) as http:
        assert isinstance(fixed, FixedClock)
        yield RunningConsole(http, app.state.console, fixed, settings)


async def signed_in_page(
    new_page: Callable[..., Awaitable[Page]], url: str, person_id: str, **options: Any
) -> Page:
    """A browser page of its own (its own cookies) where the person has signed in, as they would."""
    page = await new_page(**options)
    await page.goto(f"{url}/signin")
    await page.get_by_label("ID").fill(person_id)
    await page.get_by_label("パスワード").fill(PASSWORD)
    await page.get_by_role("button", name="サインイン").click()
    await page.wait_for_url(lambda u: "/signin" not in u)
    return page


async def accessible(page: Page, name: str | None = None) -> None:
    """The screen as it is: no serious or critical axe-core violation, every control reachable by
    Tab, no JavaScript or CSP error; with a name, its screenshot in docs/console/NAME.png."""
    if name:
        await screenshot(page, name)
    violations = await axe_violations(page)
    assert violations == [], "\n".join(map(str, violations))
    assert await keyboard_unreached(page) == []
    assert [e for e in page_errors(page) if "status of 4" not in e and "status of 5" not in e] == []
