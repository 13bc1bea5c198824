"""A hostile corpus (issue 14) against the four services as real processes: every route that reads a
body, and the AMQP intake, get the same classes of bad input in many shapes. Every HTTP case must be
a 4xx with a reason (never a 500, never a 2xx), on one pooled connection per route that keeps being
answered; every AMQP case must be parked with `x-park-reason` or answered with `booking.rejected`.

Classes: nesting (arrays, objects, mixed, just past the limit, inside a field), not JSON, encodings
(Latin-1, UTF-16, BOM, overlong UTF-8, UTF-8-encoded surrogates, stray bytes), lone surrogates (high,
low, reversed, in a key, nested), control and format characters in every string field (C0, DEL, C1,
ANSI escapes, CR/LF, zero-width, bidi overrides and isolates, line/paragraph separators, BOM, private
use, tag and unassigned code points), overlong strings, wrong types, huge and non-finite numbers and
duplicate keys.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from examples import forms
from services.booking.config import Settings as BookingSettings
from shared import topology
from shared.calendar import OfficeCalendar
from shared.clock import SystemClock
from tests import support
from tests.e2e.test_security_roles import APPS, OPS
from tests.support.stack import (
    APPROVER_KEY,
    AUDITOR_KEY,
    BOOKING_STAFF_KEY,
    PORTAL_KEY,
    SCHEDULER_STAFF_KEY,
    Stack,
)

KG = "kushiro-gyosei"
ISO = "2030-01-07T10:00:00+09:00"
CONTROLS = [
    "\x00", "\x07", "\x08", "\x0b", "\x0c", "\r", "\r\n", "\x1b[2J", "\x7f", "\x85", "\x9b31m",
    "\u200b", "\u200e", "\u202e", "\u2066", "\u2028", "\u2029", "\ufeff", "\ufff9", "\ue000",
    "\U000e0041", "\U0010fffe", "\u0378",
]  # fmt: skip
SURROGATES = ["\ud800", "\udfff", "\udc00\ud800", "x\ud83d"]

Route = tuple[str, str, str]
#: every route that reads a body -> the key it is called with and a valid body to mutate
ROUTES: dict[Route, tuple[str, dict[str, Any]]] = {
    ("booking", "POST", "/v1/offices/{office_id}/bookings"): (PORTAL_KEY, {}),  # the form, see below
    ("booking", "POST", "/v1/bookings/{booking_id}/cancellations"): (
        BOOKING_STAFF_KEY,
        {"channel": "phone", "by": "person", "recorded_by": "窓口 山田"},
    ),
    ("booking", "POST", "/v1/bookings/{booking_id}/windows"): (
        PORTAL_KEY,
        {"windows": [{"start": ISO, "end": "2030-01-07T11:00:00+09:00"}], "duration_minutes": 30},
    ),
    ("booking", "POST", "/v1/bookings/{booking_id}/attendance"): (
        BOOKING_STAFF_KEY,
        {"how": "joined", "at": ISO},
    ),
    ("booking", "POST", "/v1/bookings/{booking_id}/identity-check"): (
        BOOKING_STAFF_KEY,
        {"method": "name_and_contact", "confirmed": True, "at": ISO},
    ),
    ("booking", "POST", "/v1/bookings/{booking_id}/completion"): (
        BOOKING_STAFF_KEY,
        {"started_at": ISO, "ended_at": ISO},
    ),
    ("booking", "POST", "/v1/bookings/{booking_id}/refusal"): (
        BOOKING_STAFF_KEY,
        {"ground": "暴言", "detail": "暴言があったため", "until": ISO},
    ),
    ("booking", "POST", "/v1/offices/{office_id}/refusal-reviews/{person_key}"): (
        BOOKING_STAFF_KEY,
        {"decision": "refuse", "until": ISO},
    ),
    ("scheduler", "PUT", "/v1/staff/offices/{office_id}/counsellors/{counsellor_id}"): (
        SCHEDULER_STAFF_KEY,
        {
            "name": "釧路 一郎",
            "areas": ["釧路"],
            "apps": ["teams"],
            "weekly": {"mon": ["09:00-12:00"]},
            "exceptions": [{"date": "2030-01-07", "spans": [], "note": "休み"}],
            "active": True,
            "email": "ichiro@kushiro.example.org",
            "organizer": "ichiro@kushiro.example.org",
        },
    ),
    ("scheduler", "PUT", "/v1/staff/offices/{office_id}/counsellors/{counsellor_id}/rooms/{room_id}"): (
        SCHEDULER_STAFF_KEY,
        {
            "app": "skype-for-business",
            "join_url": "https://127.0.0.1:8443/rooms/skype/corpus",
            "meeting_id": "123 456",
            "passcode": "会議",
        },
    ),
    ("scheduler", "POST", "/v1/staff/requests/{booking_id}/confirm"): (
        SCHEDULER_STAFF_KEY,
        {"counsellor_id": "corpus-c1", "start": ISO, "duration_minutes": 30, "late_reason": "電話で依頼"},
    ),
    ("scheduler", "POST", "/v1/staff/requests/{booking_id}/propose"): (
        SCHEDULER_STAFF_KEY,
        {"options": [{"counsellor_id": "corpus-c1", "start": ISO}], "duration_minutes": 30},
    ),
    ("audit", "POST", "/v1/audit/disclosures"): (
        AUDITOR_KEY,
        {
            "legal_basis": "刑事訴訟法第197条第2項",
            "authority": "釧路警察署",
            "reference_number": "釧刑第123号",
            "scope": {"booking_id": "corpus-booking"},
            "note": "捜査関係事項照会",
        },
    ),
    ("audit", "POST", "/v1/audit/disclosures/{disclosure_id}/approve"): (APPROVER_KEY, {"reason": "適法"}),
    ("audit", "POST", "/v1/audit/disclosures/{disclosure_id}/reject"): (APPROVER_KEY, {"reason": "不備"}),
}
#: routes whose body is optional: an empty body is a valid request there
OPTIONAL_BODY = {
    ("audit", "POST", "/v1/audit/disclosures/{disclosure_id}/approve"),
    ("audit", "POST", "/v1/audit/disclosures/{disclosure_id}/reject"),
}
#: routes that take no body (or one no caller can send): nothing to corrupt
NO_BODY = {
    ("booking", "POST", "/v1/bookings/{booking_id}/alternatives/{option_id}/acceptance"),
    ("booking", "POST", "/v1/bookings/{booking_id}/alternatives/decline"),
    ("audit", "POST", "/v1/audit/disclosures/{disclosure_id}/open"),
    # no key of this stack holds the role operator (test_security_roles); the body is one bounded
    # integer, refused out of range in tests/integration/test_ops_replay_routes.py
    *((svc, "POST", "/v1/ops/parked/replay") for svc in ("booking", "scheduler", "notifier", "audit")),
}


def body_routes() -> set[Route]:
    found: set[Route] = set()
    for service, make in APPS.items():
        for r in iter_route_contexts(make().routes):
            route = r.original_route
            if isinstance(route, APIRoute) and r.path not in OPS:
                methods = (route.methods or set()) & {"POST", "PUT", "PATCH"}
                found |= {(service, m, r.path) for m in methods}
    return found


def test_every_route_with_a_body_is_in_the_corpus() -> None:
    assert body_routes() == set(ROUTES) | NO_BODY, "a route that reads a body was added: corrupt it here"


# --------------------------------------------------------------------------- the corpus


def _strings(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


def _set(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(body))
    target = copy
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return copy


def _get(body: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        body = body[p]
    return body


def _wrong_types(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return ["maybe", {}, []]
    if isinstance(value, str):
        return [12, {}, [], True]
    if isinstance(value, int):
        return ["thirty", {}, []]
    if isinstance(value, list):
        return ["x", 12, {}]
    return ["x", 12, []]


def corpus(valid: dict[str, Any]) -> dict[str, bytes]:
    """case name -> request body: each is malformed, hostile or invalid, never a valid request."""
    text = json.dumps(valid, ensure_ascii=False)
    first = next(iter(valid))
    cases: dict[str, bytes] = {
        "nesting/arrays-50000": b"[" * 50_000,
        "nesting/objects-30000": b'{"a":' * 30_000,
        "nesting/mixed-5000": b'[{"a":' * 5_000,
        "nesting/arrays-33-closed": b"[" * 33 + b"]" * 33,
        "nesting/objects-40-closed": b'{"a":' * 40 + b"1" + b"}" * 40,
        "nesting/in-a-field": json.dumps({**valid, first: json.loads("[" * 40 + "]" * 40)}).encode(),
        "json/empty": b"",
        "json/truncated": text.encode()[: len(text) // 2],
        "json/trailing-garbage": text.encode() + b"}",
        "json/python-repr": repr(valid).encode(),
        "json/null": b"null",
        "json/array": b"[]",
        "json/string": b'"a string"',
        "json/number": b"1",
        "json/comment": b"/* x */" + text.encode(),
        "encoding/latin-1": json.dumps({**valid, "x": "caf\xe9"}, ensure_ascii=False).encode(
            "latin-1", "replace"
        ),
        "encoding/utf-16": text.encode("utf-16-le"),
        "encoding/utf-16-bom": text.encode("utf-16"),
        "encoding/utf-8-bom": b"\xef\xbb\xbf" + text.encode(),
        "encoding/overlong": text.encode()[:-1] + b', "x": "\xc0\xaf"}',
        "encoding/utf8-surrogate": text.encode()[:-1] + b', "x": "\xed\xa0\x80"}',
        "encoding/stray-byte": b"\xff" + text.encode(),
        "numbers/huge-int": text.encode()[:-1] + b', "n": ' + b"9" * 30 + b"}",
        "numbers/4301-digits": text.encode()[:-1] + b', "n": ' + b"9" * 4301 + b"}",
        "numbers/int64-overflow": text.encode()[:-1] + b', "n": 9223372036854775808}',
        "numbers/1e400": text.encode()[:-1] + b', "n": 1e400}',
        "numbers/-1e400": text.encode()[:-1] + b', "n": -1e400}',
        "numbers/NaN": text.encode()[:-1] + b', "n": NaN}',
        "numbers/Infinity": text.encode()[:-1] + b', "n": Infinity}',
        "keys/duplicate": text.encode()[:-1] + f', "{first}": {json.dumps(valid[first])}}}'.encode(),
        "keys/empty-extra": json.dumps({**valid, "": 1}).encode(),
        "keys/control-extra": json.dumps({**valid, "\x1b[2J": 1}).encode(),
        "keys/surrogate-extra": json.dumps({**valid, "\ud83d": 1}).encode(),
        "keys/overlong-extra": json.dumps({**valid, "k" * 50_000: 1}).encode(),
    }
    for i, s in enumerate(SURROGATES):
        path = list(_strings(valid))[i % len(list(_strings(valid)))]
        cases[f"surrogate/{'.'.join(map(str, path))}/{i}"] = json.dumps(_set(valid, path, s)).encode()
    for n, path in enumerate(_strings(valid)):
        name = ".".join(map(str, path))
        original = _get(valid, path)
        chars = CONTROLS if n == 0 else [CONTROLS[(n * 3 + j) % len(CONTROLS)] for j in range(3)]
        for char in chars:
            cases[f"control/{name}/U+{ord(char[0]):04X}"] = json.dumps(
                _set(valid, path, original + char)
            ).encode()
        cases[f"overlong/{name}"] = json.dumps(_set(valid, path, "x" * 20_000)).encode()
    for key, value in valid.items():
        for j, wrong in enumerate(_wrong_types(value)):
            cases[f"type/{key}/{j}"] = json.dumps({**valid, key: wrong}).encode()
    return cases


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
async def things(stack: Stack) -> dict[str, str]:
    """A KG booking the scheduler coordinates, and a disclosure request, for the routes to name."""
    policy = BookingSettings().policies()[KG]
    now = SystemClock().now()
    day = OfficeCalendar(policy).first_bookable(now + timedelta(days=1))
    form = forms.kg_form(policy, day, now, device={"user_agent": "Mozilla/5.0", "ip_address": "192.0.2.1"})
    ROUTES["booking", "POST", "/v1/offices/{office_id}/bookings"] = (PORTAL_KEY, form)
    headers = {"Authorization": f"Bearer {PORTAL_KEY}", "Idempotency-Key": uuid.uuid4().hex}
    async with stack.client("booking", headers=headers) as c:
        r = await c.post(f"/v1/offices/{KG}/bookings", json=form)
    assert r.status_code == 202, r.text
    booking_id = r.json()["booking_id"]

    async def scheduler_has_it() -> bool:
        async with stack.client("scheduler", headers={"X-Staff-Key": SCHEDULER_STAFF_KEY}) as c:
            return (await c.get(f"/v1/staff/requests/{booking_id}")).status_code == 200

    await support.eventually(scheduler_has_it, timeout=30, what="the scheduler's request")
    valid = ROUTES["audit", "POST", "/v1/audit/disclosures"][1]
    async with stack.client("audit", headers={"Authorization": f"Bearer {AUDITOR_KEY}"}) as c:
        r = await c.post("/v1/audit/disclosures", json=valid)
    assert r.status_code == 201, r.text
    return {
        "office_id": KG,
        "booking_id": booking_id,
        "counsellor_id": "corpus-c1",
        "person_key": "corpus-person",
        "room_id": "corpus-room",
        "disclosure_id": r.json()["disclosure_id"],
    }


def _reason(r: httpx.Response) -> bool:
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body.get("message") or body.get("errors") or body.get("detail"))


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]}-{r[1]}-{r[2]}")
async def test_every_hostile_body_is_a_4xx_with_a_reason(
    stack: Stack, things: dict[str, str], route: Route
) -> None:
    service, method, template = route
    key, valid = ROUTES[route]
    headers = {
        "Authorization": f"Bearer {key}",
        "X-Staff-Key": key,
        "Content-Type": "application/json",
        "Idempotency-Key": uuid.uuid4().hex,
    }
    wrong: list[tuple[str, int, str]] = []
    cases = corpus(valid)
    if route in OPTIONAL_BODY:  # no body, or null, is a request without a reason
        del cases["json/empty"], cases["json/null"]
    async with stack.client(service, headers=headers) as pooled:  # one client: its connections are reused
        for name, raw in cases.items():
            pooled.headers["Idempotency-Key"] = uuid.uuid4().hex
            r = await pooled.request(method, template.format(**things), content=raw)
            if not (400 <= r.status_code < 500 and _reason(r)):
                wrong.append((name, r.status_code, r.text[:200]))
        alive = await pooled.get("/healthz")
    assert not wrong, f"{len(wrong)} of {len(cases)} cases not a 4xx with a reason: {wrong[:20]}"
    assert alive.status_code == 200
    print(f"\nhostile corpus: {service} {method} {template}: {len(cases)} cases, each a 4xx with a reason")


PATH_VALUES = ["%C2%94x", "%00", "%0D%0Ax", "%E2%80%AE", "%ED%A0%80", "%FF", "x" * 5000]


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]}-{r[1]}-{r[2]}")
async def test_hostile_path_parameters_and_headers_are_a_4xx(
    stack: Stack, things: dict[str, str], route: Route
) -> None:
    """Every path parameter in turn replaced by control characters, a bidi override, bytes that are
    not UTF-8 or a 5,000-character value; and hostile Idempotency-Key / X-Request-Id headers."""
    service, method, template = route
    key, valid = ROUTES[route]
    names = [n.split("}")[0] for n in template.split("{")[1:]]
    wrong = []
    async with stack.client(
        service, headers={"Authorization": f"Bearer {key}", "X-Staff-Key": key}
    ) as pooled:
        for name in names:
            for value in PATH_VALUES:
                url = template.format(**(things | {name: value}))
                r = await pooled.request(method, url, json=valid)
                if not 400 <= r.status_code < 500:
                    wrong.append((name, value[:20], r.status_code, r.text[:200]))
        for header in (b"k\x85\x9b31m", b"k\x1b[2J", b"k" * 300):
            extra = {"Idempotency-Key": header, "X-Request-Id": header}
            r = await pooled.request(method, template.format(**things), json={"not": "valid"}, headers=extra)
            if not 400 <= r.status_code < 500:
                wrong.append(("header", header[:20], r.status_code, r.text[:200]))
    assert not wrong, wrong


# --------------------------------------------------------------------------- AMQP


def amqp_corpus(now: str, good_form: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """case name -> (routing key, body) for consult.intake."""
    command = forms.booking_command("dev-portal", KG, "corpus", good_form, sent_at=SystemClock().now())
    command["sent_at"] = now
    device = {
        "message_id": str(uuid.uuid4()),
        "type": "device.observed",
        "office_id": KG,
        "sent_at": now,
        "portal_id": "dev-portal",
        "user_agent": "Mozilla/5.0",
        "ip_address": "192.0.2.1",
        "device_id": "d-1",
    }
    jobseeker = forms.jobseeker_message(
        "kohoku-hellowork", "12345-00000077", "090-1111-7777", None, sent_at=SystemClock().now()
    )
    windows = forms.windows_command(
        "dev-portal",
        KG,
        "corpus-booking",
        {"windows": [{"start": now, "end": now}]},
        sent_at=SystemClock().now(),
    )
    windows["sent_at"] = now
    cases: dict[str, tuple[str, bytes]] = {}
    for kind, valid in (
        ("booking.request", command),
        ("booking.change_windows", windows),
        ("device.observed", device),
        (jobseeker["type"], jobseeker),
    ):
        for name, raw in corpus(valid).items():
            if name.startswith(("control/body", "overlong/body")):
                continue  # the form's own fields: answered with booking.rejected, FORM_CASES
            cases[f"{kind}/{name}"] = (kind, raw)
    for name, fields in FORM_CASES.items():
        message = {
            **command,
            "message_id": str(uuid.uuid4()),
            "idempotency_key": f"corpus-{uuid.uuid4().hex}",
        }
        cases[name] = ("booking.request", json.dumps({**message, "body": {**good_form, **fields}}).encode())
    return cases


#: commands whose envelope is sound but whose form is not: answered with booking.rejected
FORM_CASES: dict[str, dict[str, Any]] = {
    "form/name-bidi": {"name": "釧路\u202e太郎"},
    "form/name-nul": {"name": "釧路\x00太郎"},
    "form/address-escape": {"address": "北海道釧路市\x1b[2J幸町"},
    "form/phone-trailing-nul": {"phone": "0154-22-1234\x00"},
    "form/device-nul": {"device": {"user_agent": "Mozilla\x00"}},
    "form/device-crlf": {"device": {"device_id": "d\r\nX-Injected: 1"}},
    "form/device-ip": {"device": {"ip_address": "999.0.0.1"}},
    "form/email-zero-width": {"email": "ta\u200bro@example.jp"},
    "form/overlong-name": {"name": "太" * 20_000},
    "form/checklist-type": {"device_checklist": "webcam"},
}


async def _published(stack: Stack, cases: dict[str, tuple[str, bytes]]) -> dict[str, str]:
    """Publish each case with a unique AMQP message id (the parked copy keeps it); case -> that id."""
    ids = {}
    async with support.portal_publisher(stack.amqp_url) as publish:  # as the portal's own user
        for name, (key, raw) in cases.items():
            ids[name] = f"corpus-{uuid.uuid4().hex}"
            await publish(raw, key, ids[name])
    return ids


async def _parked_ids(stack: Stack) -> dict[str, str]:
    vhost = quote(stack.amqp_url.rsplit("/", 1)[1], safe="")
    get = {"count": 10_000, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50}
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.post(f"{support.RABBITMQ_API}/queues/{vhost}/booking.parking/get", json=get)
        r.raise_for_status()
    return {
        str(m["properties"].get("message_id")): str(
            m["properties"]["headers"].get(topology.REASON_HEADER, "")
        )
        for m in r.json()
    }


async def test_every_hostile_intake_message_is_parked_with_a_reason_or_rejected(stack: Stack) -> None:
    policy = BookingSettings().policies()[KG]
    now = SystemClock().now()
    day = OfficeCalendar(policy).first_bookable(now + timedelta(days=21))
    form = forms.kg_form(policy, day, now, window=("09:00", "17:00"))
    # each booking.request case gets its own key, so an answer names the case
    cases = amqp_corpus(now.isoformat(), form)
    async with support.event_sink(stack.amqp_url, "booking.rejected") as sink:
        ids = await _published(stack, cases)
        rejected: set[str] = set()

        commands = {n: json.loads(raw)["message_id"] for n, (_, raw) in cases.items() if n in FORM_CASES}

        async def settled() -> list[str]:
            rejected.update(str(e["causation_id"]) for e in await support.received(sink))
            parked = await _parked_ids(stack)
            waiting = [n for n in cases if n not in FORM_CASES and ids[n] not in parked]
            return waiting + [n for n, m in commands.items() if m not in rejected]

        async def done() -> bool:
            return not await settled()

        try:
            await support.eventually(done, timeout=120, interval=1.0, what="every case parked or rejected")
        except AssertionError as exc:
            raise AssertionError(f"neither parked nor rejected: {(await settled())[:20]}") from exc
    parked = await _parked_ids(stack)
    unnamed = [n for n in cases if n not in FORM_CASES and not parked[ids[n]]]
    assert not unnamed, f"parked without a reason: {unnamed}"
    async with httpx.AsyncClient(timeout=5) as c:
        assert (await c.get(f"{stack.urls['booking']}/readyz")).status_code == 200
    print(f"\nhostile corpus: AMQP intake: {len(cases)} cases, each parked with a reason or rejected")
