"""A local stand-in for Microsoft Graph's online meetings and the Microsoft identity platform.

    .venv/bin/python -m deploy.graph_contract --port 8443 --state .local/graph \\
        --app TENANT,CLIENT_ID,SECRET [--app TENANT,CLIENT_ID,cert:/path/cert.pem ...]

There is no outside network on the development and CI machines, so the scheduler's Teams meetings
(services/scheduler/graph.py) are created here: this server answers the documented requests and
responses of the client-credentials token endpoint (v2.0, secret or certificate assertion) and of
Graph v1.0 `onlineMeetings` (createOrGet, get, update, delete, attendance reports and records), in
their documented shapes and error bodies. It is not Microsoft's service and decides nothing real;
against Microsoft the same client runs unchanged with the settings' default endpoints.

It also serves what the join URLs open in development: `/meet/{id}` (a Teams meeting's room, where
a name and 参加する record an attendance interval) and `/rooms/...` (pre-issued standing rooms).
`/_contract/` holds hooks for tests (faults, attendance, the meetings and the call log).

TLS: a CA and a server certificate for 127.0.0.1/localhost are created in the state folder on the
first start (`ca.pem` is what clients trust). Meetings survive a restart (`meetings.json`).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import jwt
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

JST = ZoneInfo("Asia/Tokyo")
SCOPE = "https://graph.microsoft.com/.default"
TOKEN_SECONDS = 3599
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
WEEKDAYS = "月火水木金土日"


async def urlencoded(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the token request, the room's form)."""
    return {k: v[0] for k, v in parse_qs((await request.body()).decode(), keep_blank_values=True).items()}


def now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------- TLS


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def ensure_tls(state: Path) -> tuple[Path, Path]:
    """The CA (`ca.pem`, trusted by clients) and the server's certificate; created once."""
    state.mkdir(parents=True, exist_ok=True)
    cert_file, key_file, ca_file = state / "server.pem", state / "server.key", state / "ca.pem"
    if cert_file.exists() and key_file.exists() and ca_file.exists():
        return cert_file, key_file
    start = now() - timedelta(days=1)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "consult dev Graph contract CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    san = x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=825))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(state / "ca.key", ca_key)
    _write_key(key_file, key)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))  # last: its presence means ready
    return cert_file, key_file


# ----------------------------------------------------------------- state


@dataclass
class App:
    tenant: str
    client_id: str
    secret: str | None = None
    certificate: x509.Certificate | None = None


@dataclass
class Fault:
    match: str
    status: int
    method: str | None = None
    retry_after: float | None = None
    times: int = 1
    #: only a request whose body's `externalId` is this one (a test's own appointment), so tests
    #: running at once against one contract server never take each other's faults
    external_id: str | None = None


@dataclass
class Contract:
    state: Path
    apps: dict[tuple[str, str], App] = field(default_factory=dict)
    tokens: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)
    meetings: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> resource + private keys
    faults: list[Fault] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def file(self) -> Path:
        return self.state / "meetings.json"

    def load(self) -> None:
        if self.file.exists():
            self.meetings = json.loads(self.file.read_text(encoding="utf-8"))

    def save(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.meetings, ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(self.file)

    def fault_for(self, method: str, path: str, body: Any = None) -> Fault | None:
        external_id = body.get("externalId") if isinstance(body, dict) else None
        with self.lock:
            for f in self.faults:
                if (
                    f.match in path
                    and (f.method is None or f.method.upper() == method)
                    and (f.external_id is None or f.external_id == external_id)
                    and f.times > 0
                ):
                    f.times -= 1
                    return f
        return None


def parse_app(spec: str) -> App:
    tenant, client_id, credential = spec.split(",", 2)
    if credential.startswith("cert:"):
        pem = Path(credential[5:]).read_bytes()
        return App(tenant, client_id, certificate=x509.load_pem_x509_certificate(pem))
    return App(tenant, client_id, secret=credential)


# ----------------------------------------------------------------- responses


def aad_error(status: int, error: str, code: int, text: str) -> JSONResponse:
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {uuid.uuid4()}\r\nTimestamp: {iso(now())}",
        "error_codes": [code],
        "timestamp": iso(now()),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
    return JSONResponse(body, status)


GRAPH_CODES = {
    400: "BadRequest",
    401: "InvalidAuthenticationToken",
    403: "Forbidden",
    404: "NotFound",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def graph_error(status: int, message: str, retry_after: float | None = None) -> JSONResponse:
    request_id = str(uuid.uuid4())
    body = {
        "error": {
            "code": GRAPH_CODES.get(status, "generalException"),
            "message": message,
            "innerError": {"date": iso(now()), "request-id": request_id, "client-request-id": request_id},
        }
    }
    headers = {"request-id": request_id}
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after) if retry_after == int(retry_after) else retry_after)
    return JSONResponse(body, status, headers=headers)


def public(m: dict[str, Any], base: str) -> dict[str, Any]:
    """The onlineMeeting resource as Graph shows it (private keys start with an underscore)."""
    out = {k: v for k, v in m.items() if not k.startswith("_")}
    out["@odata.context"] = f"{base}/v1.0/$metadata#users('{m['_user']}')/onlineMeetings/$entity"
    return out


def jst_span(m: dict[str, Any]) -> str:
    start = datetime.fromisoformat(m["startDateTime"]).astimezone(JST)
    end = datetime.fromisoformat(m["endDateTime"]).astimezone(JST)
    day = f"{start.year}年{start.month}月{start.day}日({WEEKDAYS[start.weekday()]})"
    return f"{day} {start:%H:%M}–{end:%H:%M}"


PAGE = """<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>body{{font-family:sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.7}}
.note{{background:#f4f4f0;padding:.8rem 1rem;border-radius:.4rem}}
button{{font-size:1.1rem;padding:.4rem 1.4rem}}
input{{font-size:1.1rem;padding:.3rem}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status)


# ----------------------------------------------------------------- the app


def create_app(contract: Contract) -> FastAPI:  # noqa: PLR0915 - one route table
    api = FastAPI(title="Graph contract server (local stand-in)", docs_url=None, redoc_url=None)
    c = contract

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def record(request: Request, status: int, body: Any = None) -> None:
        with c.lock:
            c.log.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "status": status,
                    "body": body,
                    "at": iso(now()),
                }
            )
            del c.log[:-2000]

    # --- identity platform

    @api.get("/{tenant}/v2.0/.well-known/openid-configuration")
    async def openid(tenant: str, request: Request) -> Response:
        if not any(t == tenant for t, _ in c.apps):
            return aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        b = f"{base(request)}/{tenant}"
        return JSONResponse(
            {
                "issuer": f"{b}/v2.0",
                "authorization_endpoint": f"{b}/oauth2/v2.0/authorize",
                "token_endpoint": f"{b}/oauth2/v2.0/token",
                "jwks_uri": f"{b}/discovery/v2.0/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "AS",
            }
        )

    @api.post("/{tenant}/oauth2/v2.0/token")
    async def token(tenant: str, request: Request) -> Response:
        form = await urlencoded(request)
        client_id, grant = str(form.get("client_id", "")), str(form.get("grant_type", ""))
        record(
            request, 200, {"client_id": client_id, "grant_type": grant}
        )  # received (the secret is never logged)
        if grant != "client_credentials":
            return aad_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        if str(form.get("scope", "")) != SCOPE:
            return aad_error(
                400,
                "invalid_scope",
                70011,
                "The provided value for the input parameter 'scope' is not valid.",
            )
        app = c.apps.get((tenant, client_id))
        if app is None:
            return aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found.",
            )
        if not _authenticated(app, form, f"{base(request)}/{tenant}/oauth2/v2.0/token"):
            return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        access = secrets.token_urlsafe(32)
        with c.lock:
            c.tokens[access] = (tenant, client_id, now() + timedelta(seconds=TOKEN_SECONDS))
        body = {
            "token_type": "Bearer",
            "expires_in": TOKEN_SECONDS,
            "ext_expires_in": TOKEN_SECONDS,
            "access_token": access,
        }
        return JSONResponse(body)

    # --- Graph

    def authorized(request: Request) -> bool:
        auth = request.headers.get("Authorization", "")
        held = c.tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None
        return held is not None and held[2] > now()

    def guard(request: Request, body: Any = None) -> JSONResponse | None:
        if not authorized(request):
            return graph_error(401, "Access token is empty or invalid.")
        if f := c.fault_for(request.method, request.url.path, body):
            return graph_error(f.status, "Injected by the contract server's /_contract/faults", f.retry_after)
        return None

    def find(user: str, meeting_id: str) -> dict[str, Any] | None:
        m = c.meetings.get(meeting_id)
        return m if m is not None and m["_user"] == user and not m.get("_deleted") else None

    @api.post("/v1.0/users/{user}/onlineMeetings/createOrGet")
    async def create_or_get(user: str, request: Request) -> Response:
        body = await request.json()
        if refused := guard(request, body):
            record(request, refused.status_code, body)
            return refused
        if not isinstance(body, dict) or not body.get("externalId"):
            return graph_error(400, "externalId is required.")
        with c.lock:
            for m in c.meetings.values():
                if m["_user"] == user and m["externalId"] == body["externalId"] and not m.get("_deleted"):
                    record(request, 200, body)
                    return JSONResponse(public(m, base(request)), 200)
            m = _new_meeting(user, body, base(request))
            c.meetings[m["id"]] = m
            c.save()
        record(request, 201, body)
        return JSONResponse(public(m, base(request)), 201)

    @api.api_route("/v1.0/users/{user}/onlineMeetings/{meeting_id}", methods=["GET", "PATCH", "DELETE"])
    async def one(user: str, meeting_id: str, request: Request) -> Response:
        body = await request.json() if request.method == "PATCH" else None
        if refused := guard(request):
            record(request, refused.status_code, body)
            return refused
        with c.lock:
            m = find(user, meeting_id)
            if m is None:
                record(request, 404, body)
                return graph_error(404, "The specified meeting was not found.")
            if request.method == "DELETE":
                m["_deleted"] = iso(now())
                c.save()
                record(request, 204)
                return Response(status_code=204)
            if request.method == "PATCH":
                updatable = {
                    "subject",
                    "startDateTime",
                    "endDateTime",
                    "lobbyBypassSettings",
                    "allowedPresenters",
                    "isEntryExitAnnounced",
                    "allowMeetingChat",
                    "recordAutomatically",
                }
                if not isinstance(body, dict) or set(body) - updatable:
                    return graph_error(
                        400, f"Properties not updatable: {sorted(set(body or {}) - updatable)}"
                    )
                m.update(body)
                c.save()
        record(request, 200, body)
        return JSONResponse(public(m, base(request)))

    @api.get("/v1.0/users/{user}/onlineMeetings/{meeting_id}/attendanceReports")
    async def reports(user: str, meeting_id: str, request: Request) -> Response:
        if refused := guard(request):
            record(request, refused.status_code)
            return refused
        m = find(user, meeting_id)
        if m is None:
            return graph_error(404, "The specified meeting was not found.")
        record(request, 200)
        value = [_report(m, expand=False)] if m.get("_attendance") else []
        ctx = (
            f"{base(request)}/v1.0/$metadata#users('{user}')/onlineMeetings('{meeting_id}')/attendanceReports"
        )
        return JSONResponse({"@odata.context": ctx, "value": value})

    @api.get("/v1.0/users/{user}/onlineMeetings/{meeting_id}/attendanceReports/{report_id}")
    async def report(user: str, meeting_id: str, report_id: str, request: Request) -> Response:
        if refused := guard(request):
            return refused
        m = find(user, meeting_id)
        if m is None or not m.get("_attendance") or report_id != _report_id(m):
            return graph_error(404, "The specified report was not found.")
        expand = "attendanceRecords" in request.query_params.get("$expand", "")
        return JSONResponse(_report(m, expand=expand))

    @api.get("/v1.0/users/{user}/onlineMeetings/{meeting_id}/attendanceReports/{report_id}/attendanceRecords")
    async def records(user: str, meeting_id: str, report_id: str, request: Request) -> Response:
        if refused := guard(request):
            record(request, refused.status_code)
            return refused
        m = find(user, meeting_id)
        if m is None or not m.get("_attendance") or report_id != _report_id(m):
            return graph_error(404, "The specified report was not found.")
        record(request, 200)
        return JSONResponse({"value": _records(m)})

    # --- what the join URLs open

    @api.get("/meet/{meeting_id}", response_class=HTMLResponse)
    async def room(meeting_id: str) -> HTMLResponse:
        m = c.meetings.get(meeting_id)
        if m is None or m.get("_deleted"):
            return page("開発用の会議室", "<p>この会議は削除されました（または存在しません）。</p>", 404)
        return page(
            "開発用の会議室",
            f"<p><strong>{html.escape(m['subject'])}</strong><br>{jst_span(m)}（日本時間）</p>"
            '<p class="note">開発環境で Microsoft Teams の会議の代わりに表示しているページです'
            "（音声・映像はありません）。"
            "参加すると、会議の出席記録に残ります。</p>"
            f'<form method="post" action="/meet/{html.escape(meeting_id)}/join">'
            '<label>お名前 <input name="name" required maxlength="60"></label> '
            "<button>参加する</button></form>",
        )

    @api.post("/meet/{meeting_id}/join", response_class=HTMLResponse)
    async def join(meeting_id: str, request: Request) -> HTMLResponse:
        name = (await urlencoded(request)).get("name", "").strip()[:60] or "参加者"
        with c.lock:
            m = c.meetings.get(meeting_id)
            if m is None or m.get("_deleted"):
                return page("開発用の会議室", "<p>この会議は削除されました。</p>", 404)
            m.setdefault("_attendance", []).append(
                {"role": "Attendee", "displayName": name, "join": iso(now())}
            )
            c.save()
        return page("開発用の会議室", f"<p>{html.escape(name)} さん、参加しました。</p>")

    @api.get("/rooms/{path:path}", response_class=HTMLResponse)
    async def standing_room(path: str) -> HTMLResponse:
        return page(
            "開発用の会議室（事前発行のルーム）",
            f"<p>ルーム：<code>{html.escape(path)}</code></p>"
            '<p class="note">開発環境で、事前に発行された会議室（TeleOffice など）の'
            "代わりに表示しているページです。</p>",
        )

    # --- test hooks

    @api.post("/_contract/faults")
    async def add_fault(request: Request) -> dict[str, str]:
        b = await request.json()
        with c.lock:
            c.faults.append(
                Fault(
                    str(b["match"]),
                    int(b["status"]),
                    b.get("method"),
                    b.get("retry_after"),
                    int(b.get("times", 1)),
                    b.get("external_id"),
                )
            )
        return {"ok": "fault armed"}

    @api.post("/_contract/attendance")
    async def set_attendance(request: Request) -> Response:
        b = await request.json()
        with c.lock:
            m = c.meetings.get(str(b["meeting_id"]))
            if m is None:
                return JSONResponse({"error": "no such meeting"}, 404)
            m["_attendance"] = list(b["records"])
            c.save()
        return JSONResponse({"ok": "attendance set"})

    @api.get("/_contract/meetings")
    async def all_meetings(request: Request) -> list[dict[str, Any]]:
        return [
            public(m, base(request)) | {"deleted": bool(m.get("_deleted"))} for m in list(c.meetings.values())
        ]

    @api.get("/_contract/requests")
    async def calls() -> list[dict[str, Any]]:
        return list(c.log)

    @api.post("/_contract/reset")
    async def reset() -> dict[str, str]:
        with c.lock:
            c.meetings.clear()
            c.faults.clear()
            c.log.clear()
            c.save()
        return {"ok": "reset"}

    return api


def _authenticated(app: App, form: Any, audience: str) -> bool:
    if app.secret is not None:
        return secrets.compare_digest(str(form.get("client_secret", "")), app.secret)
    if app.certificate is None or form.get("client_assertion_type") != ASSERTION_TYPE:
        return False
    try:
        claims = jwt.decode(
            str(form.get("client_assertion", "")),
            app.certificate.public_key(),  # type: ignore[arg-type]
            algorithms=["RS256", "PS256"],
            audience=audience,
            options={"require": ["exp", "aud", "iss", "sub"]},
        )
    except jwt.PyJWTError:
        return False
    return bool(claims["iss"] == claims["sub"] == app.client_id)


def _new_meeting(user: str, body: dict[str, Any], base: str) -> dict[str, Any]:
    raw = f"{uuid.uuid4()}_{body['externalId']}".encode()
    meeting_id = "MSp" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    start = body.get("startDateTime") or iso(now())
    return {
        "id": meeting_id,
        "externalId": body["externalId"],
        "subject": body.get("subject") or "",
        "startDateTime": start,
        "endDateTime": body.get("endDateTime") or start,
        "creationDateTime": iso(now()),
        "joinWebUrl": f"{base}/meet/{meeting_id}",
        "joinMeetingIdSettings": {
            "joinMeetingId": str(secrets.randbelow(10**12)).zfill(12),
            "passcode": secrets.token_urlsafe(4)[:6],
            "isPasscodeRequired": False,
        },
        "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
        "allowedPresenters": "everyone",
        "isEntryExitAnnounced": True,
        "chatInfo": {"threadId": f"19:meeting_{secrets.token_hex(16)}@thread.v2", "messageId": "0"},
        "participants": {
            "organizer": {
                "upn": user,
                "role": "presenter",
                "identity": {"user": {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, user)), "displayName": None}},
            },
            "attendees": (body.get("participants") or {}).get("attendees", []),
        },
        "_user": user,
    }


def _report_id(m: dict[str, Any]) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, m["id"]))


def _report(m: dict[str, Any], *, expand: bool) -> dict[str, Any]:
    joins = [r["join"] for r in m["_attendance"] if r.get("join")]
    out: dict[str, Any] = {
        "id": _report_id(m),
        "totalParticipantCount": len(m["_attendance"]),
        "meetingStartDateTime": min(joins, default=m["startDateTime"]),
        "meetingEndDateTime": m["endDateTime"],
    }
    if expand:
        out["attendanceRecords"] = _records(m)
    return out


def _records(m: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(m["_attendance"]):
        join, leave = r.get("join"), r.get("leave")
        seconds = 0
        if join and leave:
            seconds = int((datetime.fromisoformat(leave) - datetime.fromisoformat(join)).total_seconds())
        out.append(
            {
                "id": f"{_report_id(m)}-{i}",
                "emailAddress": r.get("email"),
                "totalAttendanceInSeconds": seconds,
                "role": r.get("role", "Attendee"),
                "identity": {"id": str(uuid.uuid4()), "displayName": r.get("displayName"), "tenantId": None},
                "attendanceIntervals": [
                    {"joinDateTime": join, "leaveDateTime": leave, "durationInSeconds": seconds}
                ],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8443)
    ap.add_argument("--state", type=Path, default=Path(".local/graph"))
    ap.add_argument(
        "--app", action="append", default=[], help="TENANT,CLIENT_ID,SECRET or TENANT,CLIENT_ID,cert:PEM"
    )
    a = ap.parse_args()
    specs = [*a.app, *(",".join(t) for t in json.loads(os.environ.get("GRAPH_CONTRACT_APPS", "[]")))]
    cert, key = ensure_tls(a.state)
    contract = Contract(a.state, apps={(p.tenant, p.client_id): p for p in map(parse_app, specs)})
    contract.load()
    uvicorn.run(
        create_app(contract),
        host=a.host,
        port=a.port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        log_level="warning",
    )


if __name__ == "__main__":
    main()
