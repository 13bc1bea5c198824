"""Wiring of the console: its runtime (own database, access records to audit), the service clients,
the pages, static files (htmx from node_modules, the console's CSS) and the security headers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console import web
from services.console.clients import Clients
from services.console.config import Settings
from services.console.routes import (
    audit,
    bookings,
    coordination,
    counsellors,
    disclosures,
    ops,
    refusals,
    schedule,
    signin,
    today,
)
from services.console.store import Stores
from shared import topology
from shared.clock import Clock
from shared.runtime import Runtime

log = logging.getLogger("consult.console")
HTMX = ("htmx.org", "dist", "htmx.min.js")
#: no inline script or style, nothing from elsewhere, never framed
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
ERRORS = {
    "csrf": "フォームの有効期限が切れたか、不正な送信です。"
    "ページを再読み込みしてから、もう一度操作してください。",
    "office": "この事務所の情報を見る権限がありません。",
    "role": "この画面を使う権限がありません。",
    "replay-cli": "このサービスの保留メッセージは画面から再投入できません"
    "（consultctl dlq replay で行います）。",
    "replay-limit": "再投入する件数は 1 件以上、上限以下で指定してください。",
}
SWEEP_SECONDS = 600.0


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(settings, topology.CONSOLE, clock=clock)
    stores = Stores(runtime.db, runtime.sealer, settings.secret_key)
    urls = {
        "booking": settings.booking_url,
        "scheduler": settings.scheduler_url,
        "audit": settings.audit_url,
        "notifier": settings.notifier_url,
    }
    keys = {service: settings.key(service) for service in urls}
    if missing := [s for s, k in keys.items() if not k]:
        log.warning("no console key for %s: its pages will answer that the service refused", missing)
    clients = Clients.open(urls, keys, settings.service_timeout_seconds)
    if monitor := settings.monitor():
        clients.with_broker(*monitor, settings.vhost, settings.service_timeout_seconds)
    else:
        log.warning("no management API user: the operations page cannot read the queues")
    names = {p.office_id: p.name for p in (settings.policies()[o] for o in settings.policies().ids())}
    console = web.Console(settings, stores, clients, runtime.clock, web.templates(), names)
    runtime.on_shutdown(clients.close)
    sweeping: list[asyncio.Task[None]] = []

    async def sweep() -> None:
        """Ended sessions, old sign-in counters and used TOTP steps leave the database."""
        while True:
            now = runtime.clock.now()
            try:
                await stores.sessions.sweep(now - console.timeouts.idle)
                await stores.attempts.sweep(now - timedelta(minutes=settings.signin_window_minutes * 2))
                await stores.totp.sweep(now - timedelta(minutes=10))
            except Exception as exc:  # the database away: next round
                log.warning("console sweep paused: %s", exc)
            await asyncio.sleep(SWEEP_SECONDS)

    @runtime.on_startup
    async def start_sweep() -> None:
        sweeping.append(asyncio.create_task(sweep(), name="console-sweep"))

    @runtime.on_shutdown
    async def stop_sweep() -> None:
        for task in sweeping:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = runtime.http_app(
        title="Console", description="The offices' staff and auditors' console", docs_url=None
    )
    for module in (
        signin,
        today,
        coordination,
        bookings,
        refusals,
        counsellors,
        schedule,
        audit,
        disclosures,
        ops,
    ):
        app.include_router(module.router(console))
    static(app, settings)
    install_answers(app, console)
    app.state.console = console
    return app


def static(app: FastAPI, settings: Settings) -> None:
    """The console's CSS and htmx from the npm package (never a CDN, nothing minified in the repo)."""
    app.mount("/static/console", StaticFiles(directory=web.HERE / "static"), name="static")
    htmx = settings.node_modules.joinpath(*HTMX)

    @app.get("/static/vendor/htmx.min.js", include_in_schema=False)
    async def htmx_js() -> Response:
        if not htmx.exists():
            raise HTTPException(404, "htmx is not installed (npm ci)")
        return FileResponse(htmx, media_type="text/javascript")


def install_answers(app: FastAPI, console: web.Console) -> None:
    """Security headers on every answer; sign-in, refusals and errors as pages in Japanese."""

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")  # pages hold personal data (R12)
        if console.secure(request):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    async def sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, web.SignInRequired)
        target = "/signin" if exc.why == "none" else f"/signin?why={exc.why}"
        if request.method == "GET" and request.headers.get("hx-request") != "true":
            return RedirectResponse(target, 303)
        context = {
            "title": "サインインが必要です",
            "message": web.labels.SESSION_ENDED.get(exc.why) or "サインインしてください。",
        }
        response = console.render(request, "error.html", context, status=401)
        response.headers["HX-Redirect"] = target
        return response

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404 and request.url.path.startswith("/static/"):
            return Response(status_code=404)
        message = ERRORS.get(str(exc.detail)) or web.labels.STATUS_TEXT.get(exc.status_code, str(exc.detail))
        context = {"title": "操作できません", "message": message}
        return console.render(request, "error.html", context, status=exc.status_code)

    app.add_exception_handler(web.SignInRequired, sign_in)
    app.add_exception_handler(StarletteHTTPException, http_error)
