"""Sign-in, sign-out, sign-out everywhere, the person's own page.

Every sign-in and failed sign-in is an access record naming the person it was for (R10: the
middleware records the route and status; 303 signed in, 401 refused, 429 locked). Failed attempts
count against the account and against the client address (services/console/ratelimit.py), which is
the one a trusted proxy reports when the console runs behind a load balancer (TRUSTED_PROXIES).
"""

import contextlib
import secrets
from datetime import datetime, timedelta
from typing import Annotated

from argon2.exceptions import VerificationError
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from services.console.accounts import HASHER, PERSON_ID, Account
from services.console.labels import SESSION_ENDED, jst
from services.console.ratelimit import Limit
from services.console.sessions import COOKIE, new_session, signin_csrf
from services.console.web import Console, Person

NONCE_COOKIE = "console_signin"
#: a hash to verify against when the account does not exist, so both cases take as long
_DUMMY = HASHER.hash(secrets.token_urlsafe(16))


class SignIn:
    """The sign-in form and its checks: CSRF, the rate limits, password, second factor."""

    def __init__(self, console: Console) -> None:
        self.console = console
        s = console.settings
        window = timedelta(minutes=s.signin_window_minutes)
        self.by_account = Limit("account", s.signin_limit_account, window)
        self.by_client = Limit("client", s.signin_limit_client, window)
        self.client_ip = s.client_ip()

    def client(self, request: Request) -> str:
        """The address failed sign-ins count against: the socket peer, or behind the office's trusted
        proxies (TRUSTED_PROXIES: the load balancer, the ingress) the client they report, as the access
        record has it (shared/client_ip.py). Without it every person behind a proxy shares one count."""
        peer = request.client.host if request.client else None
        return self.client_ip.of(peer, request.headers) or "unknown"

    def page(
        self, request: Request, *, status: int = 200, error: str = "", why: str = "", person_id: str = ""
    ) -> Response:
        nonce = request.cookies.get(NONCE_COOKIE) or secrets.token_urlsafe(16)
        context = {
            "csrf": signin_csrf(self.console.settings.secret_key, nonce),
            "error": error,
            "why": SESSION_ENDED.get(why, ""),
            "person_id": person_id,
        }
        response = self.console.render(request, "signin.html", context, status=status)
        secure = self.console.secure(request)
        response.set_cookie(
            NONCE_COOKIE, nonce, httponly=True, samesite="strict", secure=secure, path="/signin"
        )
        return response

    async def locked(self, person_id: str | None, client: str, now: datetime) -> bool:
        attempts = self.console.stores.attempts
        if person_id and await attempts.locked(self.by_account, person_id, now):
            return True
        return await attempts.locked(self.by_client, client, now)

    async def failed(self, person_id: str | None, client: str, now: datetime) -> None:
        if person_id:
            await self.console.stores.attempts.fail(self.by_account, person_id, now)
        await self.console.stores.attempts.fail(self.by_client, client, now)

    async def verify(self, person_id: str, form: dict[str, str], now: datetime) -> tuple[Account, str] | None:
        """The account and how the person proved it (`password`, `password+totp`), or None."""
        stores = self.console.stores
        account = await stores.accounts.get(person_id) if person_id else None
        password = form.get("password", "")
        if account is None:  # the same work as for a real account: no timing tells which ids exist
            with contextlib.suppress(VerificationError):
                HASHER.verify(_DUMMY, password)
            return None
        if not account.active or not account.check_password(password):
            return None
        if not account.totp_secret:
            return account, "password"
        step = account.check_totp(form.get("totp", ""), now)
        if step is None or not await stores.totp.use(person_id, step, now):  # each code once
            return None
        return account, "password+totp"

    async def attempt(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        nonce = request.cookies.get(NONCE_COOKIE, "")
        expected = signin_csrf(self.console.settings.secret_key, nonce)
        if not nonce or not secrets.compare_digest(form.get("csrf", ""), expected):
            raise HTTPException(403, "csrf")
        typed = form.get("person_id", "").strip().lower()
        person_id = typed if PERSON_ID.match(typed) else None
        request.state.actor = person_id or "anonymous"  # R10: who tried
        client = self.client(request)
        now = self.console.clock.now()
        if await self.locked(person_id, client, now):
            until = jst(self.console.stores.attempts.retry_at(self.by_account, now))
            error = f"サインインの失敗が続いたため、{until}まで受け付けません。"
            return self.page(request, status=429, person_id=typed, error=error)
        verified = await self.verify(person_id or "", form, now)
        if verified is None:
            await self.failed(person_id, client, now)
            error = "ID、パスワードまたは確認コードが正しくありません。"
            return self.page(request, status=401, person_id=typed, error=error)
        account, method = verified
        token, session = new_session(account.person_id, method, now)
        await self.console.stores.sessions.create(session)
        response = RedirectResponse(Person(account, session).home(), 303)
        secure = self.console.secure(request)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")
        response.delete_cookie(NONCE_COOKIE, path="/signin")
        return response


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]
    desk = SignIn(console)

    @api.get("/signin")
    async def signin_page(request: Request, why: str = "") -> Response:
        return desk.page(request, why=why)

    @api.post("/signin")
    async def signin(request: Request) -> Response:
        return await desk.attempt(request)

    async def end(request: Request, person: Person, everywhere: bool) -> Response:
        await console.checked(request, person)
        if everywhere:
            await console.stores.accounts.end_sessions(person.id, console.clock.now())
        await console.stores.sessions.delete(person.session.session_id)
        response = RedirectResponse(f"/signin?why={'everywhere' if everywhere else 'bye'}", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @api.post("/signout")
    async def signout(request: Request, person: Signed) -> Response:
        return await end(request, person, everywhere=False)

    @api.post("/signout/everywhere")
    async def signout_everywhere(request: Request, person: Signed) -> Response:
        return await end(request, person, everywhere=True)

    @api.get("/")
    async def home(person: Signed) -> Response:
        return RedirectResponse(person.home(), 303)

    @api.get("/account")
    async def account(request: Request, person: Signed) -> Response:
        return console.render(request, "account.html", {}, person=person)

    return api
