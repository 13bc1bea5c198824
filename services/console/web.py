"""What every console route uses: the signed-in person, the CSRF check, rendering, answers in Japanese.

A page is a template per screen; an htmx request (`HX-Request`) for a named block gets only that block
(jinja2-fragments). Forms are plain HTML forms that work without JavaScript. The person is set on
`request.state.actor` (and the office on `request.state.office_id`) for the access record (R10)
the shared middleware writes of every request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import Response
from jinja2_fragments.fastapi import Jinja2Blocks
from starlette.datastructures import FormData

from services.console import labels

__all__ = ["Console", "Form", "Person", "SignInRequired", "labels"]
from services.console.accounts import Account
from services.console.clients import Acting, Clients, ServiceError
from services.console.config import Settings
from services.console.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, Timeouts, token_hash
from services.console.store import Stores
from shared.clock import JST, Clock

HERE = Path(__file__).resolve().parent
#: a session's last_seen is written at most this often (each request reads it by _id)
TOUCH_EVERY_SECONDS = 30


class SignInRequired(Exception):
    """No session, or it ended (`why`: a key of labels.SESSION_ENDED): a GET is sent to the sign-in
    page, a POST refused 401."""

    def __init__(self, why: str = "none") -> None:
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class Person:
    account: Account
    session: Session

    @property
    def id(self) -> str:
        return self.account.person_id

    @property
    def acting(self) -> Acting:
        a = self.account
        return Acting(a.person_id, a.roles, a.offices, a.counsellor_id)

    def home(self) -> str:
        """Where the person's work starts, by role."""
        a = self.account
        if a.has("staff"):
            return f"/offices/{a.offices[0]}/today"
        if a.has("counsellor"):
            return "/my/schedule"
        if a.has("operator") and not (a.has("auditor") or a.has("disclosure-approver")):
            return "/ops"
        return "/audit/records"


@dataclass
class Console:
    settings: Settings
    stores: Stores
    clients: Clients
    clock: Clock
    templates: Jinja2Blocks
    office_names: dict[str, str]

    @property
    def timeouts(self) -> Timeouts:
        s = self.settings
        return Timeouts(timedelta(minutes=s.session_idle_minutes), timedelta(hours=s.session_absolute_hours))

    def secure(self, request: Request) -> bool:
        s = self.settings.cookie_secure
        return request.url.scheme == "https" if s is None else s

    async def person(self, request: Request) -> Person:
        """The signed-in person, or SignInRequired (the session cookie's session, still running)."""
        token = request.cookies.get(COOKIE)
        if not token:
            raise SignInRequired()
        sid = token_hash(token)
        session = await self.stores.sessions.get(sid)
        if session is None:
            raise SignInRequired("ended")
        account = await self.stores.accounts.get(session.person_id)
        now = self.clock.now()
        why = (
            "inactive"
            if account is None or not account.active
            else session.ended(now, self.timeouts, account.sessions_valid_from)
        )
        if why or account is None:
            await self.stores.sessions.delete(sid)
            raise SignInRequired(why or "inactive")
        request.state.actor = account.person_id  # R10: the access record names the person
        if (now - session.last_seen).total_seconds() >= TOUCH_EVERY_SECONDS:
            await self.stores.sessions.touch(sid, now)
        return Person(account, session)

    async def checked(self, request: Request, person: Person) -> Form:
        """The posted form, if it carries the session's CSRF token (header for htmx); else 403."""
        form = await request.form()
        presented = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not person.session.csrf_ok(presented if isinstance(presented, str) else None):
            raise HTTPException(403, "csrf")
        return Form(form)

    async def show(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        person: Person,
        fill: Callable[[dict[str, Any]], Awaitable[None]],
        *,
        status: int = 200,
        block: str | None = None,
    ) -> Response:
        """The page with what `fill` adds to its context from the services; a service's refusal is
        shown on the page instead, with the service's status."""
        try:
            await fill(context)
        except ServiceError as err:
            context["refusal"], status = refused(err), answer_status(err)
        return self.render(request, template, context, person=person, status=status, block=block)

    def render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        person: Person | None = None,
        status: int = 200,
        block: str | None = None,
    ) -> Response:
        ctx = {
            "person": person,
            "csrf": person.session.csrf if person else context.get("csrf", ""),
            "office_names": self.office_names,
            "now": self.clock.now(),
            "labels": labels,
            **context,
        }
        if block and request.headers.get("hx-request") == "true":
            return self.templates.TemplateResponse(
                request, template, ctx, status_code=status, block_name=block
            )
        return self.templates.TemplateResponse(request, template, ctx, status_code=status)


class Form:
    """A posted form's text fields (files are not taken)."""

    def __init__(self, data: FormData) -> None:
        self.data = data

    def get(self, name: str, default: str = "") -> str:
        value = self.data.get(name)
        return value.strip() if isinstance(value, str) else default

    def all(self, name: str) -> list[str]:
        return [v for v in self.data.getlist(name) if isinstance(v, str)]


def staff_of(person: Person, request: Request, office_id: str) -> None:
    """Staff of this office, else 403 (the service would refuse the call as well)."""
    request.state.office_id = office_id
    if not person.account.may_act_for(office_id):
        raise HTTPException(403, "office")


def needs(person: Person, *roles: str) -> None:
    if not any(person.account.has(r) for r in roles):
        raise HTTPException(403, "role")


def templates() -> Jinja2Blocks:
    t = Jinja2Blocks(directory=str(HERE / "templates"))
    env = t.env
    env.filters["jst"] = labels.jst
    env.filters["jst_date"] = labels.jst_date
    env.filters["jst_time"] = labels.jst_time
    env.filters["jst_iso"] = labels.jst_iso
    env.globals["status_label"] = labels.status_label
    return t


def refused(err: ServiceError) -> dict[str, Any]:
    """A service's refusal for the page: in Japanese by rule or status, with the service's own words
    (and booking's how-to-cancel line, R07) beneath."""
    return {
        "text": labels.refusal(err.status, err.rule, err.message),
        "rule": err.rule,
        "detail": err.message,
        "how": err.body.get("how_to_cancel"),
        "status": err.status,
    }


def answer_status(err: ServiceError) -> int:
    """The page's status for a service's refusal: the same, but a 401 (the console's own key) is a 502."""
    return 502 if err.status == 401 else err.status


def today_jst(clock: Clock) -> date:
    return clock.now().astimezone(JST).date()


def day_start(value: str) -> str:
    """A form's date (YYYY-MM-DD) as the start of that day in JST, ISO 8601: when a refusal ends.
    ValueError for one that is not a date."""
    return datetime.combine(date.fromisoformat(value), time(), JST).isoformat()


def day_param(value: str | None, clock: Clock) -> date:
    try:
        return date.fromisoformat(value) if value else today_jst(clock)
    except ValueError as exc:
        raise HTTPException(422, "date") from exc
