"""The console's sign-in and sessions against the real MongoDB-compatible server and RabbitMQ: sessions
by token hash, cookies, timeouts, sign-out everywhere, CSRF, rate limits, TOTP, and the access record
(R10) of every sign-in, failed sign-in and action, naming the person."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pyotp
import pytest

from services.console.sessions import COOKIE
from tests.support.console import (
    PASSWORD,
    RunningConsole,
    add_account,
    csrf_of,
    running_console,
    sign_in,
)
from tests.support.scheduler import probe

KG, HW = "kushiro-gyosei", "kohoku-hellowork"


@pytest.fixture
async def console(make_settings: Callable[..., Any]) -> AsyncIterator[RunningConsole]:
    async with running_console(make_settings) as c:
        await add_account(c.console, "tanaka.hanako", ["staff"], [KG])
        yield c


async def test_signing_in_makes_a_server_side_session_under_the_tokens_hash(console: RunningConsole) -> None:
    r = await sign_in(console.http, "tanaka.hanako")
    assert r.status_code == 303 and r.headers["location"] == f"/offices/{KG}/today"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain http
    assert "Max-Age" not in cookie and "expires" not in cookie.lower()  # the server ends sessions
    token = console.http.cookies[COOKIE]
    stored = await console.console.stores.sessions.collection.find_one({})
    assert stored is not None and stored["_id"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(stored) and stored["person_id"] == "tanaka.hanako"
    page = await console.http.get("/account")
    assert page.status_code == 200 and "田中" not in page.text and "tanaka.hanako" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_cookies_are_secure_when_the_console_is_served_over_tls(console: RunningConsole) -> None:
    r = await sign_in(console.client(tls=True), "tanaka.hanako")
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert r.headers["strict-transport-security"].startswith("max-age=")


async def test_a_post_without_the_csrf_token_is_refused_403(console: RunningConsole) -> None:
    await sign_in(console.http, "tanaka.hanako")
    refused = await console.http.post("/signout", data={})
    assert refused.status_code == 403 and "フォーム" in refused.text
    forged = await console.http.post("/signout", data={"csrf": "not-the-token"})
    assert forged.status_code == 403
    assert (await console.http.get("/account")).status_code == 200  # still signed in
    page = await console.http.get("/account")
    assert (await console.http.post("/signout", data={"csrf": csrf_of(page.text)})).status_code == 303
    assert (await console.http.get("/account")).headers["location"] == "/signin"  # no session cookie


async def test_the_sign_in_form_needs_its_own_csrf_token(console: RunningConsole) -> None:
    form = {"person_id": "tanaka.hanako", "password": PASSWORD}
    assert (await console.http.post("/signin", data=form)).status_code == 403
    await console.http.get("/signin")  # a nonce cookie, but no token in the form
    assert (await console.http.post("/signin", data=form)).status_code == 403


async def test_an_idle_session_ends_and_its_posts_are_refused(console: RunningConsole) -> None:
    await sign_in(console.http, "tanaka.hanako")
    page = await console.http.get("/account")
    console.clock.advance(timedelta(minutes=console.settings.session_idle_minutes))
    after = await console.http.get("/account")
    assert after.status_code == 303 and after.headers["location"] == "/signin?why=idle"
    post = await console.http.post("/signout/everywhere", data={"csrf": csrf_of(page.text)})
    assert post.status_code == 401 and post.headers["hx-redirect"] == "/signin?why=ended"
    assert await console.console.stores.sessions.collection.count_documents({}) == 0


async def test_a_busy_session_still_ends_at_the_absolute_timeout(console: RunningConsole) -> None:
    await sign_in(console.http, "tanaka.hanako")
    for _ in range(console.settings.session_absolute_hours * 3):  # a request every 20 minutes
        console.clock.advance(timedelta(minutes=20))
        r = await console.http.get("/account")
        if r.status_code != 200:
            break
    assert r.status_code == 303 and r.headers["location"] == "/signin?why=absolute"


async def test_signing_out_everywhere_ends_the_persons_other_sessions(console: RunningConsole) -> None:
    other = console.client()
    await sign_in(console.http, "tanaka.hanako")
    await sign_in(other, "tanaka.hanako")
    console.clock.advance(timedelta(seconds=1))
    page = await console.http.get("/account")
    r = await console.http.post("/signout/everywhere", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/signin?why=everywhere"
    elsewhere = await other.get("/account")
    assert elsewhere.headers["location"] == "/signin?why=everywhere"
    console.clock.advance(timedelta(seconds=1))
    assert (await sign_in(other, "tanaka.hanako")).status_code == 303  # a new session works
    assert (await other.get("/account")).status_code == 200


async def test_sign_in_attempts_are_limited_by_account_and_by_client(console: RunningConsole) -> None:
    limit = console.settings.signin_limit_account
    for _ in range(limit):
        assert (await sign_in(console.http, "tanaka.hanako", "wrong password!")).status_code == 401
    locked = await sign_in(console.http, "tanaka.hanako")  # even the right password
    assert locked.status_code == 429 and "受け付けません" in locked.text
    await add_account(console.console, "suzuki.ichiro", ["staff"], [KG])
    assert (await sign_in(console.http, "suzuki.ichiro")).status_code == 303  # another account is open
    for n in range(console.settings.signin_limit_client - limit):
        await sign_in(console.http, f"guess{n}", "wrong password!")  # spraying ids from one address
    assert (await sign_in(console.http, "suzuki.ichiro")).status_code == 429
    console.clock.advance(timedelta(minutes=console.settings.signin_window_minutes))
    assert (await sign_in(console.http, "tanaka.hanako")).status_code == 303  # the window ended
    ids = [d["_id"] async for d in console.console.stores.attempts.collection.find({})]
    assert not any("tanaka" in i or "127.0.0.1" in i for i in ids)  # keyed hashes only


async def test_a_second_factor_is_asked_for_and_each_code_works_once(console: RunningConsole) -> None:
    accounts = console.console.stores.accounts
    account = await accounts.get("tanaka.hanako")
    assert account is not None
    secret = pyotp.random_base32()
    await accounts.put(replace(account, totp_secret=secret))
    stored = await accounts.collection.find_one({"_id": "tanaka.hanako"})
    assert stored is not None and secret not in str(stored)  # sealed at rest
    assert (await sign_in(console.http, "tanaka.hanako")).status_code == 401
    code = pyotp.TOTP(secret).at(console.clock.now())
    assert (await sign_in(console.http, "tanaka.hanako", totp=code)).status_code == 303
    assert (await sign_in(console.client(), "tanaka.hanako", totp=code)).status_code == 401  # replayed


async def test_staff_of_one_office_cannot_open_another_offices_pages(console: RunningConsole) -> None:
    await sign_in(console.http, "tanaka.hanako")
    for page in ("today", "coordination", "refusals"):
        r = await console.http.get(f"/offices/{HW}/{page}")
        assert r.status_code == 403 and "権限" in r.text, page
    assert (await console.http.get("/audit/records")).status_code == 403  # not an auditor
    assert (await console.http.get("/my/schedule")).status_code == 403  # not a counsellor


async def test_r10_every_sign_in_failure_and_action_is_an_access_record_naming_the_person(
    console: RunningConsole, amqp_url: str
) -> None:
    async with probe(amqp_url, "access.logged") as seen:
        await sign_in(console.http, "tanaka.hanako", "wrong password!")
        await sign_in(console.http, "tanaka.hanako")
        await console.http.get(f"/offices/{HW}/today")

        async def recorded() -> list[tuple[str, str, int, str]]:
            got = [(e.payload.actor, e.payload.route, e.payload.status, e.office_id) for e in seen.events]
            return got if len([g for g in got if g[0] == "tanaka.hanako"]) >= 3 else []

        from tests.support import eventually

        got = await eventually(recorded, timeout=15, what="the console's access records")
    assert ("tanaka.hanako", "/signin", 401, "-") in got
    assert ("tanaka.hanako", "/signin", 303, "-") in got
    assert ("tanaka.hanako", "/offices/{office_id}/today", 403, HW) in got
    assert all(e.payload.service == "console" for e in seen.events)


async def test_htmx_is_served_from_the_npm_package_not_a_cdn(console: RunningConsole) -> None:
    r = await console.http.get("/static/vendor/htmx.min.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    page = await console.http.get("/signin")
    assert 'src="/static/vendor/htmx.min.js"' in page.text and "https://" not in page.text
    assert '<html lang="ja">' in page.text
