"""R16: Microsoft Teams meetings through Microsoft Graph, app-only.

The token comes from the Microsoft identity platform by the client-credentials grant (`msal`,
which caches it until it expires); the calls are plain HTTPS (`httpx`), the documented requests:

- `POST /users/{organizer}/onlineMeetings/createOrGet` with `externalId` = the appointment id, so
  a retried creation returns the same meeting (200) instead of a second one (201);
- `PATCH /users/{organizer}/onlineMeetings/{id}`: the lobby, so the person waits until the
  counsellor (the organiser) admits them, and only the organiser presents;
- `DELETE /users/{organizer}/onlineMeetings/{id}` (404: already gone, which is what was wanted);
- `GET .../{id}/attendanceReports` and `.../attendanceReports/{report}/attendanceRecords` (R08).

Graph answering 429 or 5xx, or not answering, is `GraphRetryLater` (with its `Retry-After`); any
other refusal is `GraphRefused` with Graph's status and error code. The secret is never logged:
`GraphAccess`'s repr leaves it out, and errors carry Graph's code and message only.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import msal  # type: ignore[import-untyped]
import requests

from shared.clock import JST

log = logging.getLogger("consult.scheduler.graph")

SCOPE = "https://graph.microsoft.com/.default"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_RETRY_AFTER = 10.0  # seconds, when Graph is away and says nothing
HTTP_TIMEOUT = 20.0
# Only the organiser skips the lobby and presents: the person waits until the counsellor admits them.
LOBBY: dict[str, Any] = {
    "lobbyBypassSettings": {"scope": "organizer", "isDialInBypassEnabled": False},
    "allowedPresenters": "organizer",
}


@dataclass(frozen=True)
class GraphAccess:
    """One office's app registration and where its token and Graph are served."""

    tenant_id: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    certificate: tuple[str, str] | None = field(default=None, repr=False)  # (private key PEM, SHA-1 hex)
    authority_host: str = "https://login.microsoftonline.com"
    graph_base: str = "https://graph.microsoft.com/v1.0"
    ca_bundle: str | None = None  # a CA to trust instead of the system's (the local contract server)

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"

    def credential(self) -> str | dict[str, str]:
        if self.certificate is not None:
            key, thumbprint = self.certificate
            return {"private_key": key, "thumbprint": thumbprint}
        if self.client_secret is None:
            raise ValueError(f"no secret or certificate for Graph app {self.client_id}")
        return self.client_secret


class GraphRetryLater(Exception):
    """Graph is throttling (429), failing (5xx) or out of reach: try again after `retry_after` s."""

    def __init__(self, detail: str, retry_after: float = DEFAULT_RETRY_AFTER) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class GraphRefused(Exception):
    """Graph (or the token endpoint) refused the request for good: `status` and its error code."""

    def __init__(self, status: int, code: str, message: str = "") -> None:
        super().__init__(f"{status} {code}: {message}"[:300])
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class OnlineMeeting:
    id: str
    join_url: str
    external_id: str | None = None
    meeting_id: str | None = None  # joinMeetingIdSettings.joinMeetingId
    passcode: str | None = None
    lobby: Mapping[str, Any] = field(default_factory=dict)
    allowed_presenters: str | None = None

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> OnlineMeeting:
        settings = doc.get("joinMeetingIdSettings") or {}
        return cls(
            id=str(doc["id"]),
            join_url=str(doc["joinWebUrl"]),
            external_id=doc.get("externalId"),
            meeting_id=settings.get("joinMeetingId"),
            passcode=settings.get("passcode"),
            lobby=doc.get("lobbyBypassSettings") or {},
            allowed_presenters=doc.get("allowedPresenters"),
        )

    @property
    def lobby_set(self) -> bool:
        want = LOBBY["lobbyBypassSettings"]
        return self.lobby.get("scope") == want["scope"] and self.allowed_presenters == "organizer"


@dataclass(frozen=True)
class AttendanceRecord:
    role: str | None
    first_join: datetime | None
    display_name: str | None = None


def graph_time(value: str | None) -> datetime | None:
    """Graph's times: ISO 8601 in UTC, often with seven fractional digits."""
    if not value:
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def retry_after(response: httpx.Response) -> float:
    value = response.headers.get("Retry-After")
    if not value:
        return DEFAULT_RETRY_AFTER
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class GraphMeetings:
    """The calls the scheduler makes for one office (one app registration)."""

    def __init__(self, access: GraphAccess) -> None:
        self.access = access
        self._app: Any = None  # msal.ConfidentialClientApplication, built on first use
        self._app_lock = asyncio.Lock()
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=access.ca_bundle) if access.ca_bundle else True
        )
        self._http = httpx.AsyncClient(
            base_url=access.graph_base.rstrip("/"), verify=verify, timeout=HTTP_TIMEOUT
        )
        self.token_requests = 0  # tokens fetched from the identity platform (not from msal's cache)

    def __repr__(self) -> str:
        return f"GraphMeetings({self.access!r})"

    # ---------------------------------------------------------------- token

    def _build_app(self) -> Any:
        a = self.access
        http = requests.Session()
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE in the environment
        # override a session's `verify` (psf/requests#3829), and a configured CA must win.
        http.request = functools.partial(  # type: ignore[method-assign]
            http.request, verify=a.ca_bundle or True, timeout=HTTP_TIMEOUT
        )
        return msal.ConfidentialClientApplication(
            a.client_id,
            client_credential=a.credential(),
            authority=a.authority,
            http_client=http,
            instance_discovery=False,  # the tenant's own authority, no global discovery call
        )

    def _token_sync(self) -> dict[str, Any]:
        if self._app is None:
            self._app = self._build_app()
        result: dict[str, Any] = self._app.acquire_token_for_client(scopes=[SCOPE])
        return result

    async def token(self) -> str:
        async with self._app_lock:
            try:
                result = await asyncio.to_thread(self._token_sync)
            except requests.RequestException as exc:
                raise GraphRetryLater(f"token endpoint not reachable: {type(exc).__name__}") from exc
            except ValueError as exc:  # msal: the authority's configuration could not be read
                self._app = None
                raise GraphRetryLater(f"identity platform: {str(exc)[:200]}") from exc
        if "access_token" not in result:
            code = str(result.get("error", "token_refused"))
            detail = str(result.get("error_description", ""))[:200]
            if code in {"temporarily_unavailable", "server_error"}:
                raise GraphRetryLater(f"token endpoint: {code}")
            raise GraphRefused(401, code, detail)
        if result.get("token_source") == "identity_provider":
            self.token_requests += 1
        return str(result["access_token"])

    async def _forget_token(self) -> None:
        async with self._app_lock:
            if self._app is not None:
                await asyncio.to_thread(self._app.remove_tokens_for_client)

    # ---------------------------------------------------------------- calls

    async def _call(self, method: str, path: str, json: Any = None) -> httpx.Response:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {await self.token()}"}
            try:
                response = await self._http.request(method, path, json=json, headers=headers)
            except httpx.TransportError as exc:
                raise GraphRetryLater(f"{method} {path}: {type(exc).__name__}") from exc
            if response.status_code == 401 and attempt == 1:  # a token revoked early: fetch a new one
                await self._forget_token()
                continue
            return response
        return response

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        status = response.status_code
        try:
            error = response.json().get("error") or {}
        except ValueError:
            error = {}
        code, message = str(error.get("code") or status), str(error.get("message") or "")[:200]
        if status in RETRY_STATUSES:
            raise GraphRetryLater(f"{what}: {status} {code}", retry_after(response))
        raise GraphRefused(status, code, message)

    @staticmethod
    def _meetings(organizer: str) -> str:
        return f"/users/{quote(organizer, safe='@')}/onlineMeetings"

    async def create_or_get(
        self, organizer: str, external_id: str, subject: str, start: datetime, end: datetime
    ) -> OnlineMeeting:
        """The meeting of `external_id`, created on the first call; its lobby set."""
        body = {
            "externalId": external_id,
            "subject": subject,
            "startDateTime": start.astimezone(JST).isoformat(),
            "endDateTime": end.astimezone(JST).isoformat(),
        }
        response = await self._call("POST", f"{self._meetings(organizer)}/createOrGet", body)
        self._raise_for(response, "createOrGet")
        meeting = OnlineMeeting.of(response.json())
        if not meeting.lobby_set:  # a retry finds it set already
            path = f"{self._meetings(organizer)}/{quote(meeting.id, safe='')}"
            patched = await self._call("PATCH", path, LOBBY)
            self._raise_for(patched, "lobby settings")
            meeting = OnlineMeeting.of(patched.json())
        log.info("Teams meeting for %s: %s (%s)", external_id, meeting.id, response.status_code)
        return meeting

    async def delete(self, organizer: str, meeting_id: str) -> None:
        response = await self._call("DELETE", f"{self._meetings(organizer)}/{quote(meeting_id, safe='')}")
        if response.status_code == 404:
            return
        self._raise_for(response, "delete")

    async def attendance(self, organizer: str, meeting_id: str) -> list[AttendanceRecord]:
        """Everyone the meeting's attendance reports list (none until Teams has written one)."""
        base = f"{self._meetings(organizer)}/{quote(meeting_id, safe='')}/attendanceReports"
        response = await self._call("GET", base)
        self._raise_for(response, "attendance reports")
        records: list[AttendanceRecord] = []
        for report in (response.json().get("value") or [])[:10]:
            listed = await self._call("GET", f"{base}/{quote(str(report['id']), safe='')}/attendanceRecords")
            self._raise_for(listed, "attendance records")
            for r in listed.json().get("value") or []:
                joins = [graph_time(i.get("joinDateTime")) for i in r.get("attendanceIntervals") or []]
                known = [j for j in joins if j is not None]
                name = (r.get("identity") or {}).get("displayName")
                records.append(AttendanceRecord(r.get("role"), min(known, default=None), name))
        return records

    async def aclose(self) -> None:
        await self._http.aclose()
