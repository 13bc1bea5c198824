"""The office's counsellors as staff see and change them: weekly availability and dated exceptions,
areas (R20), apps and pre-issued rooms (R16), work email. Changed through the scheduler's staff API
(`PUT /v1/staff/offices/{office}/counsellors/{id}`, the rooms' PUT and DELETE, and DELETE to retire),
which validates and decides: its 422 and 409 are shown beside the field they name, with the rule.
The scheduler also refuses staff of another office (403); the console checks the office first."""

import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from services.console.clients import ServiceError
from services.console.web import Console, Form, Person, answer_status, refused, staff_of
from shared.policy import OfficePolicy, Policies

WEEKDAYS = (
    ("mon", "月"),
    ("tue", "火"),
    ("wed", "水"),
    ("thu", "木"),
    ("fri", "金"),
    ("sat", "土"),
    ("sun", "日"),
)
#: the scheduler's forms of a counsellor id and a room id (services/scheduler/availability.py)
COUNSELLOR_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,60}$")
ROOM_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,40}$")
#: spans as staff type them: "09:00-12:00, 13:00-17:00" (commas, 、 or spaces between)
SPAN_SEPARATORS = re.compile(r"[,、，\s]+")
#: blank exception rows the form offers for new dates
NEW_EXCEPTION_ROWS = 3
#: the rule a field's error falls under where the scheduler names none
FIELD_RULES = {"areas": "R20", "apps": "R16", "rooms": "R16", "room": "R16"}
#: what each field's error means, in Japanese (the scheduler's own words are shown beneath)
FIELD_TEXT = {
    "counsellor_id": "相談員IDは半角の英小文字・数字で始め、"
    "英小文字・数字・「.」「_」「-」で入力してください。",
    "name": "氏名を入力してください（100文字まで）。",
    "email": "業務用メールアドレスの形式ではありません。",
    "organizer": "会議の主催者（Teams）は200文字までです。",
    "weekly": "時間帯は「09:00-12:00」の形で、開始を終了より前にしてください（複数は「、」で区切ります）。",
    "exceptions": "日付と時間帯を確かめてください（時間帯は「09:00-12:00」の形、空欄は終日不在）。",
    "areas": "この事務所の担当地域から選んでください（地域のある事務所では1つ以上）。",
    "apps": "この事務所で使うアプリから選んでください。",
    "rooms": "ルームのアプリと参加URLを確かめてください（https、そのアプリのホスト）。",
    "room_id": "ルームIDは半角の英小文字・数字で始め、英小文字・数字・「.」「_」「-」で入力してください。",
    "room": "ルームのアプリと参加URLを確かめてください（https、そのアプリのホスト）。",
    "body": "入力内容を確かめてください。",
}


def spans(text: str) -> list[str]:
    return [s for s in SPAN_SEPARATORS.split(text.strip()) if s]


def body_of(form: Form) -> dict[str, Any]:
    """What the scheduler's PUT takes, from the form (the scheduler validates it)."""
    weekly = {key: spans(form.get(f"weekly_{key}")) for key, _ in WEEKDAYS}
    rows = zip(form.all("exc_date"), form.all("exc_spans"), form.all("exc_note"), strict=False)
    exceptions = [{"date": d.strip(), "spans": spans(s), "note": n.strip()} for d, s, n in rows if d.strip()]
    return {
        "name": form.get("name"),
        "email": form.get("email") or None,
        "organizer": form.get("organizer") or None,
        "areas": form.all("areas"),
        "apps": form.all("apps"),
        "weekly": {k: v for k, v in weekly.items() if v},
        "exceptions": exceptions,
        "active": form.get("active") == "on",
    }


def room_of(form: Form) -> dict[str, Any]:
    return {
        "app": form.get("app"),
        "join_url": form.get("join_url"),
        "meeting_id": form.get("meeting_id") or None,
        "passcode": form.get("passcode") or None,
    }


def shown(c: dict[str, Any]) -> dict[str, Any]:
    """A counsellor as the form shows it (what the scheduler answered, or the body sent back)."""
    return {
        **c,
        "weekly_text": {k: "、".join(c.get("weekly", {}).get(k, [])) for k, _ in WEEKDAYS},
        "exceptions": [{**e, "spans_text": "、".join(e.get("spans", []))} for e in c.get("exceptions", [])],
    }


def field_errors(err: ServiceError, default: str) -> dict[str, dict[str, Any]]:
    """The scheduler's 422/409 by the form's field: `{"weekly": {"text", "rule", "detail"}}`; keys are
    a field (`areas`), a weekday (`weekly.mon`) or an exception row (`exceptions.2`). A message that
    names no field goes to `default`."""
    detail = err.body.get("detail")
    found: dict[str, list[tuple[str, str | None]]] = {}
    items = detail if isinstance(detail, list) else [{"loc": [], "msg": err.message, "rule": err.rule}]
    for e in items:
        loc = [str(p) for p in e.get("loc", []) if p != "body"]
        key = ".".join(loc[:2]) if loc[:1] in (["weekly"], ["exceptions"]) and len(loc) > 1 else None
        key = key or (loc[0] if loc else default)
        found.setdefault(key, []).append((str(e.get("msg", "")), e.get("rule")))
    out = {}
    for key, messages in found.items():
        root = key.split(".")[0]
        rule = next((r for _, r in messages if r), None) or FIELD_RULES.get(root)
        text = FIELD_TEXT.get(root, FIELD_TEXT["body"])
        if err.status == 409 and root == "counsellor_id":
            text = "この相談員IDは別の事務所の相談員のものです。別のIDにしてください。"
        out[key] = {"text": text, "rule": rule, "detail": "; ".join(m for m, _ in messages)}
    return out


@dataclass(frozen=True)
class Call:
    """Who asks about which office, in one request."""

    request: Request
    office_id: str
    person: Person


@dataclass
class Pages:
    console: Console
    policies: Policies

    def policy_of(self, office_id: str) -> OfficePolicy:
        policy = self.policies.get(office_id)
        if policy is None:
            raise HTTPException(404, "office")
        return policy

    async def one(self, call: Call, counsellor_id: str) -> dict[str, Any]:
        """The counsellor of the office (retired ones too), else 404."""
        scheduler = self.console.clients.scheduler
        for c in await scheduler.counsellors(call.office_id, call.person.acting, include_inactive=True):
            if c["counsellor_id"] == counsellor_id:
                return dict(c)
        raise HTTPException(404, "no such counsellor")

    async def guarded(self, call: Call, answer: Awaitable[Response]) -> Response:
        """The answer, or the list page with the scheduler's refusal (its 403 for another office,
        503 when it cannot be reached) where the page itself could not be made."""
        try:
            return await answer
        except ServiceError as err:
            context: dict[str, Any] = {"office_id": call.office_id, "counsellors": [], "weekdays": WEEKDAYS}
            context["refusal"] = refused(err)
            return self.console.render(
                call.request, "counsellors.html", context, person=call.person, status=answer_status(err)
            )

    def edit_page(
        self,
        call: Call,
        counsellor: dict[str, Any] | None,
        *,
        status: int = 200,
        **extra: Any,
    ) -> Response:
        policy = self.policy_of(call.office_id)
        context = {
            "office_id": call.office_id,
            "c": shown(counsellor or {"active": True}),
            "new": counsellor is None or "rooms" not in counsellor,
            "weekdays": WEEKDAYS,
            "areas": [a.name for a in policy.areas],
            "apps": [a.value for a in policy.meeting_apps],
            "room_apps": [m.app.value for m in policy.meeting if m.provider == "pre-issued"],
            "rows": NEW_EXCEPTION_ROWS,
            "errors": {},
            "room": {},
            **extra,
        }
        return self.console.render(
            call.request, "counsellor_edit.html", context, person=call.person, status=status
        )

    async def save(self, call: Call, counsellor_id: str, body: dict[str, Any], *, new: bool) -> Response:
        """PUT the counsellor; the scheduler's 422/409 beside the fields, with what was sent."""
        scheduler = self.console.clients.scheduler
        try:
            await scheduler.put_counsellor(call.office_id, counsellor_id, body, call.person.acting)
        except ServiceError as err:
            sent = {**body, "counsellor_id": counsellor_id}
            if not new:
                sent["rooms"] = (await self.one(call, counsellor_id)).get("rooms", [])
            if err.status not in (409, 422):
                return self.edit_page(call, sent, refusal=refused(err), status=answer_status(err))
            errors = field_errors(err, "counsellor_id" if err.status == 409 else "body")
            return self.edit_page(call, sent, errors=errors, status=err.status)
        return done(call, counsellor_id, "counsellor-saved")

    async def put_room(self, call: Call, counsellor_id: str, form: Form) -> Response:
        """R16: register or replace a room; the scheduler's 422 beside the room's fields."""
        room_id, room = form.get("room_id"), room_of(form)
        sent = {**room, "room_id": room_id}
        if not ROOM_ID.match(room_id):
            errors = {"room_id": {"text": FIELD_TEXT["room_id"], "rule": "R16", "detail": ""}}
            c = await self.one(call, counsellor_id)
            return self.edit_page(call, c, errors=errors, room=sent, status=422)
        scheduler = self.console.clients.scheduler
        try:
            await scheduler.put_room(call.office_id, counsellor_id, room_id, room, call.person.acting)
        except ServiceError as err:
            c = await self.one(call, counsellor_id)
            if err.status not in (409, 422):
                return self.edit_page(call, c, room=sent, refusal=refused(err), status=answer_status(err))
            errors = {
                ("room" if k in ("rooms", "body") else k): v for k, v in field_errors(err, "room").items()
            }
            return self.edit_page(call, c, errors=errors, room=sent, status=err.status)
        return done(call, counsellor_id, "room-saved")

    async def changed(self, call: Call, counsellor_id: str, change: Awaitable[None], what: str) -> Response:
        """A change without a form to correct: done, or the counsellor's page with the refusal."""
        try:
            await change
        except ServiceError as err:
            c = await self.one(call, counsellor_id)
            return self.edit_page(call, c, refusal=refused(err), status=answer_status(err))
        return done(call, counsellor_id, what)


def done(call: Call, counsellor_id: str, what: str) -> Response:
    return RedirectResponse(f"/offices/{call.office_id}/counsellors/{counsellor_id}?done={what}", 303)


def checked_id(counsellor_id: str) -> str:
    if not COUNSELLOR_ID.match(counsellor_id) or counsellor_id == "new":
        raise HTTPException(404, "no such counsellor")
    return counsellor_id


def router(console: Console) -> APIRouter:
    api = APIRouter()
    Signed = Annotated[Person, Depends(console.person)]
    scheduler = console.clients.scheduler
    pages = Pages(console, console.settings.policies())

    async def staff_call(request: Request, office_id: str, person: Signed) -> Call:
        staff_of(person, request, office_id)
        return Call(request, office_id, person)

    Staff = Annotated[Call, Depends(staff_call)]

    @api.get("/offices/{office_id}/counsellors")
    async def counsellors(call: Staff, done: str = "") -> Response:
        context: dict[str, Any] = {
            "office_id": call.office_id,
            "counsellors": [],
            "weekdays": WEEKDAYS,
            "done": done,
        }

        async def fill(ctx: dict[str, Any]) -> None:
            acting = call.person.acting
            ctx["counsellors"] = await scheduler.counsellors(call.office_id, acting, include_inactive=True)

        return await console.show(call.request, "counsellors.html", context, call.person, fill)

    @api.get("/offices/{office_id}/counsellors/new")
    async def new(call: Staff) -> Response:
        return pages.edit_page(call, None)

    @api.get("/offices/{office_id}/counsellors/{counsellor_id}")
    async def edit(call: Staff, counsellor_id: str, done: str = "") -> Response:
        async def answer() -> Response:
            return pages.edit_page(call, await pages.one(call, checked_id(counsellor_id)), done=done)

        return await pages.guarded(call, answer())

    @api.post("/offices/{office_id}/counsellors")
    async def create(call: Staff) -> Response:
        """A new counsellor: the id comes from the form."""
        form = await console.checked(call.request, call.person)
        counsellor_id, body = form.get("counsellor_id"), body_of(form)
        if not COUNSELLOR_ID.match(counsellor_id) or counsellor_id == "new":
            errors = {"counsellor_id": {"text": FIELD_TEXT["counsellor_id"], "rule": None, "detail": ""}}
            sent = {**body, "counsellor_id": counsellor_id}
            return pages.edit_page(call, sent, errors=errors, status=422)
        return await pages.guarded(call, pages.save(call, counsellor_id, body, new=True))

    @api.post("/offices/{office_id}/counsellors/{counsellor_id}")
    async def update(call: Staff, counsellor_id: str) -> Response:
        form = await console.checked(call.request, call.person)
        return await pages.guarded(
            call, pages.save(call, checked_id(counsellor_id), body_of(form), new=False)
        )

    @api.post("/offices/{office_id}/counsellors/{counsellor_id}/retire")
    async def retire(call: Staff, counsellor_id: str) -> Response:
        await console.checked(call.request, call.person)
        cid = checked_id(counsellor_id)
        change = scheduler.retire_counsellor(call.office_id, cid, call.person.acting)
        return await pages.guarded(call, pages.changed(call, cid, change, "counsellor-retired"))

    @api.post("/offices/{office_id}/counsellors/{counsellor_id}/rooms")
    async def put_room(call: Staff, counsellor_id: str) -> Response:
        """R16: register or replace a pre-issued room (the room id comes from the form)."""
        form = await console.checked(call.request, call.person)
        return await pages.guarded(call, pages.put_room(call, checked_id(counsellor_id), form))

    @api.post("/offices/{office_id}/counsellors/{counsellor_id}/rooms/{room_id}/delete")
    async def delete_room(call: Staff, counsellor_id: str, room_id: str) -> Response:
        await console.checked(call.request, call.person)
        cid = checked_id(counsellor_id)
        if not ROOM_ID.match(room_id):
            raise HTTPException(404, "no such room")
        change = scheduler.delete_room(call.office_id, cid, room_id, call.person.acting)
        return await pages.guarded(call, pages.changed(call, cid, change, "room-deleted"))

    return api
