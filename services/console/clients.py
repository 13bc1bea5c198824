"""One small typed client per service the console calls: booking, scheduler, audit (httpx), and the
RabbitMQ management API for the operations page (`Broker`, the console's own monitoring user).

Each call carries the console's own credential in that service (made with `--console`: it acts only
for a named person) and the person it acts for: `X-Acting-Person`, the person's roles the service
knows (`X-Acting-Roles`), their offices (`X-Acting-Offices`) and, for a counsellor in the scheduler,
`X-Acting-Counsellor` (PEOPLE-SPEC.md). The service decides what the person may do; the console only
asks. A refusal comes back as `ServiceError` with the service's status, message and rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from shared import parking
from shared.acting import OPERATOR

#: the roles each service knows a person by; the console asserts only those
SERVICE_ROLES: dict[str, frozenset[str]] = {
    "booking": frozenset({"staff", OPERATOR}),
    "scheduler": frozenset({"staff", "counsellor", OPERATOR}),
    "audit": frozenset({"auditor", "disclosure-approver", OPERATOR}),
    "notifier": frozenset({OPERATOR}),
}


@dataclass(frozen=True)
class Acting:
    """Who the console acts for in a call."""

    person: str
    roles: tuple[str, ...]
    offices: tuple[str, ...] = ()
    counsellor: str | None = None

    def headers(self, service: str) -> dict[str, str]:
        roles = [r for r in self.roles if r in SERVICE_ROLES[service]]
        h = {"X-Acting-Person": self.person, "X-Acting-Roles": ",".join(roles)}
        if service in ("booking", "scheduler"):
            h["X-Acting-Offices"] = ",".join(self.offices)
        if service == "scheduler" and self.counsellor and "counsellor" in roles:
            h["X-Acting-Counsellor"] = self.counsellor
        return h


class ServiceError(Exception):
    """A service refused or failed a call: its status and what it said."""

    def __init__(self, service: str, status: int, body: Any) -> None:
        self.service, self.status = service, status
        self.body: dict[str, Any] = body if isinstance(body, dict) else {"detail": body}
        self.rule: str | None = self.body.get("rule")
        super().__init__(f"{service} answered {status}: {self.message}")

    @property
    def message(self) -> str:
        detail = self.body.get("message") or self.body.get("detail") or ""
        if isinstance(detail, list):  # FastAPI's 422: a list of field errors
            return "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in detail)
        return str(detail)


class ServiceClient:
    service = ""

    def __init__(self, http: httpx.AsyncClient, key: str) -> None:
        self.http = http
        self.key = key

    def _headers(self, acting: Acting) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **acting.headers(self.service)}

    async def call(
        self,
        method: str,
        path: str,
        acting: Acting,
        *,
        json: Any = None,
        params: Any = None,
    ) -> Any:
        try:
            r = await self.http.request(method, path, headers=self._headers(acting), json=json, params=params)
        except httpx.HTTPError as exc:
            raise ServiceError(self.service, 503, {"detail": f"{type(exc).__name__}: {exc}"}) from exc
        return self.answer(r)

    async def replay_parked(self, limit: int, acting: Acting) -> dict[str, Any]:
        """The service replays up to `limit` of its own parked messages (role operator)."""
        return dict(await self.call("POST", "/v1/ops/parked/replay", acting, json={"limit": limit}))

    def answer(self, r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"detail": r.text[:500]}
            raise ServiceError(self.service, r.status_code, body)
        return r.json() if r.content else None


class Booking(ServiceClient):
    service = "booking"

    async def office(self, office_id: str, acting: Acting) -> dict[str, Any]:
        return dict(await self.call("GET", f"/v1/offices/{office_id}", acting))

    async def calendar(self, office_id: str, start: str, end: str, acting: Acting) -> dict[str, Any]:
        params = {"from": start, "to": end}
        return dict(await self.call("GET", f"/v1/offices/{office_id}/calendar", acting, params=params))

    async def bookings(
        self, office_id: str, start: str, end: str, acting: Acting, status: list[str] | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"from": start, "to": end, "limit": 500}
        if status:
            params["status"] = status
        return list(await self.call("GET", f"/v1/offices/{office_id}/bookings", acting, params=params))

    async def booking(self, booking_id: str, acting: Acting) -> dict[str, Any]:
        return dict(await self.call("GET", f"/v1/bookings/{booking_id}", acting))

    async def act(self, booking_id: str, action: str, body: dict[str, Any], acting: Acting) -> dict[str, Any]:
        """A staff action on a booking: cancellations, attendance, identity-check, refusal."""
        return dict(await self.call("POST", f"/v1/bookings/{booking_id}/{action}", acting, json=body))

    async def refusals(self, office_id: str, acting: Acting) -> list[dict[str, Any]]:
        return list(await self.call("GET", f"/v1/offices/{office_id}/refusals", acting))

    async def reviews(self, office_id: str, acting: Acting) -> list[dict[str, Any]]:
        return list(await self.call("GET", f"/v1/offices/{office_id}/refusal-reviews", acting))

    async def lift(self, office_id: str, person_key: str, acting: Acting) -> dict[str, Any]:
        return dict(await self.call("DELETE", f"/v1/offices/{office_id}/refusals/{person_key}", acting))

    async def decide(self, office_id: str, person_key: str, body: dict[str, Any], acting: Acting) -> Any:
        path = f"/v1/offices/{office_id}/refusal-reviews/{person_key}"
        return await self.call("POST", path, acting, json=body)


class Scheduler(ServiceClient):
    service = "scheduler"

    async def requests(self, office_id: str, acting: Acting) -> list[dict[str, Any]]:
        return list(await self.call("GET", f"/v1/staff/offices/{office_id}/requests", acting))

    async def request(self, booking_id: str, acting: Acting) -> dict[str, Any]:
        return dict(await self.call("GET", f"/v1/staff/requests/{booking_id}", acting))

    async def counsellors(
        self, office_id: str, acting: Acting, *, include_inactive: bool = False
    ) -> list[dict[str, Any]]:
        params = {"include_inactive": "true"} if include_inactive else None
        return list(
            await self.call("GET", f"/v1/staff/offices/{office_id}/counsellors", acting, params=params)
        )

    async def put_counsellor(
        self, office_id: str, counsellor_id: str, body: dict[str, Any], acting: Acting
    ) -> dict[str, Any]:
        """Create or replace the counsellor (weekly, exceptions, areas R20, apps R16, work email);
        their rooms are kept."""
        path = f"/v1/staff/offices/{office_id}/counsellors/{counsellor_id}"
        return dict(await self.call("PUT", path, acting, json=body))

    async def retire_counsellor(self, office_id: str, counsellor_id: str, acting: Acting) -> None:
        await self.call("DELETE", f"/v1/staff/offices/{office_id}/counsellors/{counsellor_id}", acting)

    async def put_room(
        self, office_id: str, counsellor_id: str, room_id: str, body: dict[str, Any], acting: Acting
    ) -> dict[str, Any]:
        """R16: register or replace one of the counsellor's pre-issued rooms."""
        path = f"/v1/staff/offices/{office_id}/counsellors/{counsellor_id}/rooms/{room_id}"
        return dict(await self.call("PUT", path, acting, json=body))

    async def delete_room(self, office_id: str, counsellor_id: str, room_id: str, acting: Acting) -> None:
        path = f"/v1/staff/offices/{office_id}/counsellors/{counsellor_id}/rooms/{room_id}"
        await self.call("DELETE", path, acting)

    async def free_slots(
        self, office_id: str, acting: Acting, *, day: str, area: str | None, minutes: int, near: str | None
    ) -> list[dict[str, Any]]:
        """The day's free slots, closest to `near` (a wished time) first."""
        params: dict[str, Any] = {"day": day, "duration_minutes": minutes}
        if area:
            params["area"] = area
        if near:
            params["near"] = near
        return list(
            await self.call("GET", f"/v1/staff/offices/{office_id}/free-slots", acting, params=params)
        )

    async def confirm(self, booking_id: str, body: dict[str, Any], acting: Acting) -> dict[str, Any]:
        return dict(await self.call("POST", f"/v1/staff/requests/{booking_id}/confirm", acting, json=body))

    async def propose(self, booking_id: str, body: dict[str, Any], acting: Acting) -> dict[str, Any]:
        return dict(await self.call("POST", f"/v1/staff/requests/{booking_id}/propose", acting, json=body))

    async def schedule(self, counsellor_id: str, day: str, acting: Acting) -> dict[str, Any]:
        """One counsellor's consultations and held times on a JST day (staff of their office, or the
        counsellor themselves)."""
        path = f"/v1/counsellors/{counsellor_id}/schedule"
        return dict(await self.call("GET", path, acting, params={"day": day}))


class Audit(ServiceClient):
    service = "audit"

    async def records(
        self, params: dict[str, Any], acting: Acting
    ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            r = await self.http.get("/v1/audit/records", headers=self._headers(acting), params=params)
        except httpx.HTTPError as exc:
            raise ServiceError(self.service, 503, {"detail": str(exc)}) from exc
        return list(self.answer(r)), r.headers.get("x-next-cursor")

    async def export(self, params: dict[str, Any], acting: Acting) -> httpx.Response:
        """The export, streamed: the caller reads the open response and closes it."""
        req = self.http.build_request("GET", "/v1/audit/export", headers=self._headers(acting), params=params)
        try:
            r = await self.http.send(req, stream=True)
        except httpx.HTTPError as exc:
            raise ServiceError(self.service, 503, {"detail": str(exc)}) from exc
        if r.status_code >= 400:
            await r.aread()
            await r.aclose()
            self.answer(r)
        return r

    async def verify(self, stream: str | None, acting: Acting) -> dict[str, Any]:
        params = {"stream": stream} if stream else None
        return dict(await self.call("GET", "/v1/audit/verify", acting, params=params))

    async def stats(self, params: dict[str, Any], acting: Acting) -> dict[str, Any]:
        return dict(await self.call("GET", "/v1/audit/stats", acting, params=params))

    async def disclosures(self, acting: Acting) -> list[dict[str, Any]]:
        return list(await self.call("GET", "/v1/audit/disclosures", acting))

    async def disclosure(self, disclosure_id: str, acting: Acting) -> dict[str, Any]:
        return dict(await self.call("GET", f"/v1/audit/disclosures/{disclosure_id}", acting))

    async def request_disclosure(self, body: dict[str, Any], acting: Acting) -> dict[str, Any]:
        return dict(await self.call("POST", "/v1/audit/disclosures", acting, json=body))

    async def decide(self, disclosure_id: str, approve: bool, reason: str | None, acting: Acting) -> Any:
        path = f"/v1/audit/disclosures/{disclosure_id}/{'approve' if approve else 'reject'}"
        return await self.call("POST", path, acting, json={"reason": reason})


class Broker:
    """The RabbitMQ management API as the console's own `monitoring` user reads it (console-monitor:
    no configure, no write, AMQP read on the parking queues alone)."""

    service = "rabbitmq"

    def __init__(self, http: httpx.AsyncClient, vhost: str) -> None:
        self.http = http
        self.vhost = quote(vhost, safe="")

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        try:
            r = await self.http.request(method, path, json=json)
        except httpx.HTTPError as exc:
            raise ServiceError(self.service, 503, {"detail": f"{type(exc).__name__}: {exc}"}) from exc
        if r.status_code >= 400:
            raise ServiceError(self.service, 502 if r.status_code == 401 else r.status_code, r.text[:300])
        return r.json()

    async def queues(self) -> list[dict[str, Any]]:
        """Every queue of the vhost: depth, consumers, rates (never a message)."""
        return list(await self._call("GET", f"queues/{self.vhost}"))

    async def peek(self, queue: str, count: int) -> list[dict[str, Any]]:
        """Up to `count` messages of a parking queue, left parked (shared/parking.py `peek_body`)."""
        path = f"queues/{self.vhost}/{quote(queue, safe='')}/get"
        return list(await self._call("POST", path, json=parking.peek_body(count)))


class Notifier(ServiceClient):
    """The notifier: only its replay of parked messages (role operator)."""

    service = "notifier"


@dataclass
class Clients:
    booking: Booking
    scheduler: Scheduler
    audit: Audit
    https: tuple[httpx.AsyncClient, ...]
    broker: Broker | None = None
    notifier: Notifier | None = None

    def of(self, service: str) -> ServiceClient:
        """The client of a service that replays its parked messages over HTTP (KeyError: none)."""
        found = {"booking": self.booking, "scheduler": self.scheduler, "audit": self.audit}
        if self.notifier is not None:
            found["notifier"] = self.notifier
        return found[service]

    def with_broker(self, api: str, user: str, password: str, vhost: str, timeout: float) -> Clients:
        auth = httpx.BasicAuth(user, password)
        http = httpx.AsyncClient(base_url=api.rstrip("/") + "/", auth=auth, timeout=timeout, trust_env=False)
        self.broker = Broker(http, vhost)
        self.https = (*self.https, http)
        return self

    @classmethod
    def open(cls, urls: dict[str, str], keys: dict[str, str], timeout: float) -> Clients:
        made = {s: httpx.AsyncClient(base_url=u, timeout=timeout, trust_env=False) for s, u in urls.items()}
        return cls(
            Booking(made["booking"], keys["booking"]),
            Scheduler(made["scheduler"], keys["scheduler"]),
            Audit(made["audit"], keys["audit"]),
            tuple(made.values()),
            notifier=Notifier(made["notifier"], keys["notifier"]) if "notifier" in made else None,
        )

    async def close(self) -> None:
        for h in self.https:
            await h.aclose()
