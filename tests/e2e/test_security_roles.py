"""Who may do what: every route of every service, called with every kind of credential (issue 8).

The routes are enumerated from each service's FastAPI app, so a new route without a line in the table
below fails `test_every_route_is_in_the_table`. Each credential is presented every way any service
reads one (Authorization: Bearer, X-API-Key and X-Staff-Key at once), so no key is accepted by a
service it does not belong to. Mutating routes are called with an empty JSON body: a permitted caller
gets 422/404/409 (nothing changes). A forbidden caller is sent three bodies: a *valid* one (a
well-formed request from the wrong role is refused), an empty object and text that is not JSON: it
must get 401/403 for all three. Every service checks who calls before it validates what they sent
(dependencies, and shared/authfirst.py for bodies that are not JSON), so no 422 tells a stranger
the schema.

Staff keys are per office in both services that have staff: booking's `csk_` keys (booking's
database) and the scheduler's `css_` keys (the scheduler's database). The `*-other-office` roles are
keys of the Hello Work office; the routes name a Kushiro (KG) booking, office or request, so they
get 403. Timer queries of such a key show its own office (`/v1/staff/timers`), and another office's
`?office_id=` is a 403 (`test_scheduler_staff_key_acts_for_its_office_only`).

404 instead of 403 — deliberate, where the service hides that something exists:
- booking `GET /v1/requests/{idempotency_key}`: a request is visible only to the portal that sent it;
  for every other key it "does not exist" (404).
- booking routes on `/v1/bookings/{booking_id}…`: a portal key of the right office but another portal
  gets 404 for a booking it did not make (`booking_for`), before staff-only checks.
Public (no key needed, no personal data): booking `GET /v1/offices/{office_id}` (what a portal needs to
build the form: phone, terms, form fields) and `GET /v1/offices/{office_id}/calendar` (open days).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pymongo import AsyncMongoClient

from examples import forms
from services.audit.app import create_app as audit_app
from services.audit.config import Settings as AuditSettings
from services.booking.app import create_app as booking_app
from services.booking.config import Settings as BookingSettings
from services.booking.store.access import CredentialStore
from services.notifier.app import create_app as notifier_app
from services.notifier.config import Settings as NotifierSettings
from services.scheduler.app import create_app as scheduler_app
from services.scheduler.config import Settings as SchedulerSettings
from services.scheduler.store.staff_keys import StaffKeyStore
from shared.calendar import OfficeCalendar
from shared.clock import SystemClock
from tests import support
from tests.support.stack import (
    APPROVER_KEY,
    AUDITOR_KEY,
    BOOKING_STAFF_KEY,
    PORTAL_KEY,
    SCHEDULER_STAFF_KEY,
    Stack,
)

KG, HW = "kushiro-gyosei", "kohoku-hellowork"
OPS = {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
OPS |= {"/asyncapi.json", "/redoc"}

# --------------------------------------------------------------------------- the credentials
#: portal = the dev portal (every office) that made the booking used below
ROLES = (
    "none",
    "portal",
    "portal-other-office",  # a portal key for HW only; the routes name KG
    "portal-other-portal",  # a portal key for KG, but not the portal that made the booking
    "booking-staff",
    "booking-staff-other-office",  # a booking staff key for HW only
    "scheduler-staff",
    "scheduler-staff-other-office",  # a scheduler staff key for HW only
    "auditor",
    "approver",
)
OTHER_OFFICE_PORTAL_KEY = f"cpk_roles-other-office-{uuid.uuid4().hex}"
OTHER_PORTAL_KEY = f"cpk_roles-other-portal-{uuid.uuid4().hex}"
OTHER_OFFICE_STAFF_KEY = f"csk_roles-other-office-{uuid.uuid4().hex}"
OTHER_OFFICE_SCHEDULER_KEY = f"css_roles-other-office-{uuid.uuid4().hex}"
KEYS: dict[str, str | None] = {
    "none": None,
    "portal": PORTAL_KEY,
    "portal-other-office": OTHER_OFFICE_PORTAL_KEY,
    "portal-other-portal": OTHER_PORTAL_KEY,
    "booking-staff": BOOKING_STAFF_KEY,
    "booking-staff-other-office": OTHER_OFFICE_STAFF_KEY,
    "scheduler-staff": SCHEDULER_STAFF_KEY,
    "scheduler-staff-other-office": OTHER_OFFICE_SCHEDULER_KEY,
    "auditor": AUDITOR_KEY,
    "approver": APPROVER_KEY,
}

# --------------------------------------------------------------------------- who may do what
PUBLIC = frozenset(ROLES)
PORTAL_OR_STAFF = frozenset({"portal", "booking-staff"})
BOOKING_STAFF = frozenset({"booking-staff"})
SCHEDULER_STAFF = frozenset({"scheduler-staff"})
ANY_SCHEDULER_STAFF = frozenset({"scheduler-staff", "scheduler-staff-other-office"})  # no office named
READERS = frozenset({"auditor", "approver"})
APPROVER = frozenset({"approver"})
OTHER_PORTAL_HIDDEN = frozenset({"portal-other-portal"})

Route = tuple[str, str, str]  # service, method, path template
#: route -> (roles allowed, roles answered 404 to hide existence); everyone else: 401/403
TABLE: dict[Route, tuple[frozenset[str], frozenset[str]]] = {
    # booking: portals book and follow their own bookings; staff of the office run them
    ("booking", "POST", "/v1/offices/{office_id}/bookings"): (
        frozenset({"portal", "portal-other-portal"}),  # any portal of the office
        frozenset(),
    ),
    ("booking", "GET", "/v1/requests/{idempotency_key}"): (
        frozenset({"portal"}),
        frozenset(
            {"portal-other-office", "portal-other-portal", "booking-staff", "booking-staff-other-office"}
        ),
    ),
    ("booking", "GET", "/v1/bookings/{booking_id}"): (PORTAL_OR_STAFF, OTHER_PORTAL_HIDDEN),
    ("booking", "POST", "/v1/bookings/{booking_id}/alternatives/{option_id}/acceptance"): (
        PORTAL_OR_STAFF,
        OTHER_PORTAL_HIDDEN,
    ),
    ("booking", "POST", "/v1/bookings/{booking_id}/alternatives/decline"): (
        PORTAL_OR_STAFF,
        OTHER_PORTAL_HIDDEN,
    ),
    ("booking", "POST", "/v1/bookings/{booking_id}/windows"): (PORTAL_OR_STAFF, OTHER_PORTAL_HIDDEN),
    ("booking", "POST", "/v1/bookings/{booking_id}/cancellations"): (PORTAL_OR_STAFF, OTHER_PORTAL_HIDDEN),
    ("booking", "GET", "/v1/offices/{office_id}/calendar"): (PUBLIC, frozenset()),
    ("booking", "GET", "/v1/offices/{office_id}"): (PUBLIC, frozenset()),
    ("booking", "GET", "/v1/offices/{office_id}/bookings"): (BOOKING_STAFF, frozenset()),
    ("booking", "POST", "/v1/bookings/{booking_id}/attendance"): (BOOKING_STAFF, OTHER_PORTAL_HIDDEN),
    ("booking", "POST", "/v1/bookings/{booking_id}/identity-check"): (BOOKING_STAFF, OTHER_PORTAL_HIDDEN),
    ("booking", "POST", "/v1/bookings/{booking_id}/completion"): (BOOKING_STAFF, OTHER_PORTAL_HIDDEN),
    ("booking", "POST", "/v1/bookings/{booking_id}/refusal"): (BOOKING_STAFF, OTHER_PORTAL_HIDDEN),
    ("booking", "GET", "/v1/offices/{office_id}/refusals"): (BOOKING_STAFF, frozenset()),
    ("booking", "GET", "/v1/offices/{office_id}/refusal-reviews"): (BOOKING_STAFF, frozenset()),
    ("booking", "POST", "/v1/offices/{office_id}/refusal-reviews/{person_key}"): (BOOKING_STAFF, frozenset()),
    ("booking", "DELETE", "/v1/offices/{office_id}/refusals/{person_key}"): (BOOKING_STAFF, frozenset()),
    # scheduler: staff keys of the office named in the path, or of the request's office
    ("scheduler", "GET", "/v1/staff/offices/{office_id}/counsellors"): (SCHEDULER_STAFF, frozenset()),
    ("scheduler", "PUT", "/v1/staff/offices/{office_id}/counsellors/{counsellor_id}"): (
        SCHEDULER_STAFF,
        frozenset(),
    ),
    ("scheduler", "DELETE", "/v1/staff/offices/{office_id}/counsellors/{counsellor_id}"): (
        SCHEDULER_STAFF,
        frozenset(),
    ),
    ("scheduler", "GET", "/v1/staff/offices/{office_id}/counsellors/{counsellor_id}/rooms"): (
        SCHEDULER_STAFF,
        frozenset(),
    ),
    ("scheduler", "PUT", "/v1/staff/offices/{office_id}/counsellors/{counsellor_id}/rooms/{room_id}"): (
        SCHEDULER_STAFF,
        frozenset(),
    ),
    ("scheduler", "DELETE", "/v1/staff/offices/{office_id}/counsellors/{counsellor_id}/rooms/{room_id}"): (
        SCHEDULER_STAFF,
        frozenset(),
    ),
    ("scheduler", "GET", "/v1/staff/offices/{office_id}/free-slots"): (SCHEDULER_STAFF, frozenset()),
    ("scheduler", "GET", "/v1/staff/offices/{office_id}/requests"): (SCHEDULER_STAFF, frozenset()),
    ("scheduler", "GET", "/v1/staff/requests/{booking_id}"): (SCHEDULER_STAFF, frozenset()),
    ("scheduler", "POST", "/v1/staff/requests/{booking_id}/confirm"): (SCHEDULER_STAFF, frozenset()),
    ("scheduler", "POST", "/v1/staff/requests/{booking_id}/propose"): (SCHEDULER_STAFF, frozenset()),
    ("scheduler", "GET", "/v1/staff/timers"): (ANY_SCHEDULER_STAFF, frozenset()),  # its own office's
    ("scheduler", "GET", "/v1/staff/timers/lease"): (ANY_SCHEDULER_STAFF, frozenset()),
    # a counsellor's schedule: staff of its office, or that counsellor; the path names no counsellor
    # that exists, so every valid scheduler key is told so (404) once it is known to be a staff key
    ("scheduler", "GET", "/v1/counsellors/{counsellor_id}/schedule"): (
        SCHEDULER_STAFF,
        frozenset({"scheduler-staff-other-office"}),
    ),
    # audit (R11): auditors and disclosure approvers read; only approvers decide disclosures (four eyes)
    ("audit", "GET", "/v1/audit/records"): (READERS, frozenset()),
    ("audit", "GET", "/v1/audit/export"): (READERS, frozenset()),
    ("audit", "GET", "/v1/audit/stats"): (READERS, frozenset()),
    ("audit", "GET", "/v1/audit/verify"): (READERS, frozenset()),
    ("audit", "GET", "/v1/audit/disclosures"): (READERS, frozenset()),
    ("audit", "POST", "/v1/audit/disclosures"): (READERS, frozenset()),
    ("audit", "GET", "/v1/audit/disclosures/{disclosure_id}"): (READERS, frozenset()),
    ("audit", "POST", "/v1/audit/disclosures/{disclosure_id}/approve"): (APPROVER, frozenset()),
    ("audit", "POST", "/v1/audit/disclosures/{disclosure_id}/reject"): (APPROVER, frozenset()),
    ("audit", "POST", "/v1/audit/disclosures/{disclosure_id}/open"): (READERS, frozenset()),
    # every service replays its own parked messages for a person with the role operator, which none
    # of these keys holds (staff keys get `staff` only unless `--role operator` names it)
    ("booking", "POST", "/v1/ops/parked/replay"): (frozenset(), frozenset()),
    ("scheduler", "POST", "/v1/ops/parked/replay"): (frozenset(), frozenset()),
    ("notifier", "POST", "/v1/ops/parked/replay"): (frozenset(), frozenset()),
    ("audit", "POST", "/v1/ops/parked/replay"): (frozenset(), frozenset()),
}
DENIED = {401, 403}
#: valid bodies, sent to forbidden callers (besides an empty object and text that is not JSON)
ISO = "2030-01-07T10:00:00+09:00"
VALID_BODIES: dict[Route, dict[str, Any]] = {
    ("booking", "POST", "/v1/bookings/{booking_id}/cancellations"): {"channel": "portal"},
    ("booking", "POST", "/v1/bookings/{booking_id}/windows"): {"windows": [{"start": ISO, "end": ISO}]},
    ("booking", "POST", "/v1/bookings/{booking_id}/attendance"): {"how": "joined"},
    ("booking", "POST", "/v1/bookings/{booking_id}/identity-check"): {"method": "photo_id"},
    ("booking", "POST", "/v1/bookings/{booking_id}/completion"): {"started_at": ISO, "ended_at": ISO},
    ("booking", "POST", "/v1/bookings/{booking_id}/refusal"): {"ground": "暴言", "detail": "roles"},
    ("booking", "POST", "/v1/offices/{office_id}/refusal-reviews/{person_key}"): {"decision": "dismiss"},
    **{
        (svc, "POST", "/v1/ops/parked/replay"): {"limit": 1}
        for svc in ("booking", "scheduler", "notifier", "audit")
    },
}

APPS: dict[str, Callable[[], FastAPI]] = {
    "booking": lambda: booking_app(BookingSettings()),
    "scheduler": lambda: scheduler_app(SchedulerSettings()),
    "notifier": lambda: notifier_app(NotifierSettings()),
    "audit": lambda: audit_app(AuditSettings()),
}


def routes() -> set[Route]:
    found: set[Route] = set()
    for service, make in APPS.items():
        # FastAPI ≥ 0.16x keeps included routers lazily in app.routes: walk their effective routes
        for r in iter_route_contexts(make().routes):
            if isinstance(r.original_route, APIRoute) and r.path and r.path not in OPS:
                found |= {(service, m, r.path) for m in (r.methods or set()) - {"HEAD"}}
    return found


def test_every_route_is_in_the_table() -> None:
    assert routes() == set(TABLE), "a route was added or removed: say in TABLE who may call it"


def headers(role: str) -> dict[str, str]:
    key = KEYS[role]
    return {} if key is None else {"Authorization": f"Bearer {key}", "X-API-Key": key, "X-Staff-Key": key}


async def _register_scoped_keys(stack: Stack) -> None:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(support.MONGODB_URL)
    try:
        store = CredentialStore(mongo[f"{stack.db_prefix}booking"]["credentials"])
        now = SystemClock().now()
        await store.register(OTHER_OFFICE_PORTAL_KEY, "portal", "roles-hw-portal", [HW], now)
        await store.register(OTHER_PORTAL_KEY, "portal", "roles-kg-portal", [KG], now)
        await store.register(OTHER_OFFICE_STAFF_KEY, "staff", "roles-hw-staff", [HW], now)
        scheduler = StaffKeyStore(mongo[f"{stack.db_prefix}scheduler"])
        await scheduler.register(OTHER_OFFICE_SCHEDULER_KEY, "roles-hw-desk", [HW], now)
    finally:
        await mongo.close()


@pytest.fixture(scope="module")
async def params(stack: Stack) -> dict[str, str]:
    """Path parameters that name real things: a KG booking made by the dev portal."""
    await _register_scoped_keys(stack)
    policy = BookingSettings().policies()[KG]
    now = SystemClock().now()
    day = OfficeCalendar(policy).first_bookable(now + timedelta(days=1))
    key = f"roles-{uuid.uuid4().hex}"
    async with stack.client("booking", headers=headers("portal") | {"Idempotency-Key": key}) as c:
        r = await c.post(f"/v1/offices/{KG}/bookings", json=forms.kg_form(policy, day, now))
    assert r.status_code == 202, r.text
    VALID_BODIES["booking", "POST", "/v1/offices/{office_id}/bookings"] = forms.kg_form(policy, day, now)
    booking_id = r.json()["booking_id"]

    async def scheduler_has_it() -> bool:  # the scheduler's routes name the request it coordinates
        async with stack.client("scheduler", headers=headers("scheduler-staff")) as c:
            return (await c.get(f"/v1/staff/requests/{booking_id}")).status_code == 200

    await support.eventually(scheduler_has_it, timeout=30, what="the scheduler's request")
    return {
        "office_id": KG,
        "booking_id": booking_id,
        "idempotency_key": key,
        "option_id": "no-such-option",
        "person_key": "no-such-person",
        "room_id": "no-such-room",
        "counsellor_id": "no-such-counsellor",
        "disclosure_id": "no-such-disclosure",
    }


BAD_BODIES: tuple[dict[str, Any], ...] = ({"json": {}}, {"content": b"{not json"})
JSON = {"content-type": "application/json"}


async def test_who_may_do_what(stack: Stack, params: dict[str, str]) -> None:
    gate = asyncio.Semaphore(16)

    async def call(route: Route, role: str, body: dict[str, Any]) -> tuple[Route, str, str, int]:
        service, method, template = route
        async with gate, stack.client(service, headers=headers(role) | JSON) as c:
            r = await c.request(method, template.format(**params), **body)
        return route, role, str(body)[:30], r.status_code

    calls = []
    for route in TABLE:
        for role in ROLES:
            bodies: tuple[dict[str, Any], ...] = ({},)
            if route[1] in {"POST", "PUT"}:
                valid = {"json": VALID_BODIES.get(route, {})}
                bodies = ({"json": {}},) if role in TABLE[route][0] else (valid, *BAD_BODIES)
            calls += [call(route, role, body) for body in bodies]
    answers = await asyncio.gather(*calls)
    wrong = []
    for route, role, sent, status in answers:
        allowed, hidden = TABLE[route]
        if role in allowed:
            ok = status not in DENIED and status < 500
        elif role in hidden:
            ok = status == 404
        else:
            ok = status in DENIED
        if not ok:
            wrong.append(f"{role:29} {route[1]:6} {route[0]}{route[2]} {sent:32} -> {status}")
    assert not wrong, "unexpected answers:\n" + "\n".join(wrong)


async def test_scheduler_staff_key_acts_for_its_office_only(stack: Stack, params: dict[str, str]) -> None:
    """A valid scheduler staff key of HW: 403 (not 401) on KG's routes, also with a body FastAPI
    would refuse; its own office's routes work; a timer query shows its own office only."""
    booking_id = params["booking_id"]
    async with stack.client("scheduler", headers=headers("scheduler-staff-other-office") | JSON) as c:
        kg = await c.get(f"/v1/staff/offices/{KG}/counsellors")
        hw = await c.get(f"/v1/staff/offices/{HW}/counsellors")
        request = await c.get(f"/v1/staff/requests/{booking_id}")
        confirm = await c.post(f"/v1/staff/requests/{booking_id}/confirm", json={"start": "not a time"})
        put = await c.put(f"/v1/staff/offices/{KG}/counsellors/roles-x", content=b"{not json")
        kg_timers = await c.get("/v1/staff/timers", params={"office_id": KG, "status": "all"})
        own_timers = await c.get("/v1/staff/timers", params={"status": "all"})
    assert [r.status_code for r in (kg, request, confirm, put, kg_timers)] == [403] * 5
    assert "may not act for kushiro-gyosei" in kg.json()["detail"]
    assert hw.status_code == 200 and own_timers.status_code == 200
    assert {t["office_id"] for t in own_timers.json()} <= {HW}
    async with stack.client("scheduler", headers=headers("scheduler-staff")) as c:  # every office
        assert (await c.get(f"/v1/staff/offices/{KG}/counsellors")).status_code == 200
        assert (await c.get(f"/v1/staff/requests/{booking_id}")).json()["office_id"] == KG


#: per service, a route that reads a body and a caller allowed to get that far (notifier: none)
BODY_ROUTES = {
    "booking": ("POST", f"/v1/offices/{KG}/bookings", "portal"),
    "scheduler": ("PUT", f"/v1/staff/offices/{KG}/counsellors/roles-c", "scheduler-staff"),
    "notifier": ("POST", "/healthz", "none"),
    "audit": ("POST", "/v1/audit/disclosures", "auditor"),
}


@pytest.mark.parametrize("service", sorted(BODY_ROUTES))
async def test_every_service_refuses_oversized_bodies(stack: Stack, service: str) -> None:
    """shared/limits.py in Runtime.http_app: a declared length over the limit is 413 before anything
    runs; a streamed body (no Content-Length) is cut off with 413 as the route reads it."""
    method, path, role = BODY_ROUTES[service]
    big = b"x" * (BookingSettings().max_body_bytes + 1)

    async def streamed() -> Any:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    json_type = {"content-type": "application/json"}
    async with stack.client(service, headers=headers(role) | json_type) as c:
        declared = await c.request(method, path, content=big)
        chunked = await c.request(method, path, content=streamed())
        small = await c.request(method, path, content=b"{}")
    assert declared.status_code == 413, declared.text
    assert small.status_code != 413
    if service != "notifier":  # its only POST-able path never reads a body
        assert chunked.status_code == 413, chunked.text
