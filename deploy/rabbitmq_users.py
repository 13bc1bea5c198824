"""RabbitMQ users and least-privilege permissions, derived from shared/topology.py (R12).

    python -m deploy.rabbitmq_users generate [--check]        # deploy/rabbitmq/definitions.json
    python -m deploy.rabbitmq_users apply --vhost / --secrets .local/secrets [--portal ID ...]
    python -m deploy.rabbitmq_users apply --vhost / --from-env  # compose: RABBITMQ_<USER>_PASSWORD
    python -m deploy.rabbitmq_users render --from-env --out defs.json --admin admin  # load_definitions
    python -m deploy.rabbitmq_users url booking --secrets .local/secrets
    python -m deploy.rabbitmq_users portal add soumu-portal --secrets .local/secrets   # one portal
    python -m deploy.rabbitmq_users portal revoke soumu-portal

Users: one per service (booking, scheduler, notifier, audit), one per portal, `portal.<portal id>`
(may only publish the intake commands to consult.intake, and must set the AMQP `user_id` property to
its own name, which booking checks against the command's `portal_id`: issue 14), and `ops`
(consultctl: read parked messages, send them back through consult.redeliver), and `console-monitor`
(the console's operations page: the `monitoring` tag, AMQP read on the parking queues only). A
service may read its own parking queue and publish to consult.redeliver: it replays its own parked
messages (`POST /v1/ops/parked/replay`, shared/parking.py). Nothing else: no
service user has a management tag (nor `impersonator`, which would let it set another `user_id`),
none may touch the default exchange, none may read another service's queues. The portals are
`--portal` (repeatable) or RABBITMQ_PORTALS (comma-separated); the one user all portals once shared,
`portal`, is deleted by `apply`.

Who declares the topology: both. The definitions carry every exchange, queue and binding, so the
broker is complete before any service starts (a portal's command is routable even while booking is
down). Services keep their idempotent `topology.declare_service` at start-up, which fresh test vhosts
need; RabbitMQ checks `configure` on every non-passive declare, even of an existing exchange, so a
service checks the five consult.* exchanges passively (no permission needed) and declares them only
where they are missing (a fresh vhost, as guest). A service user may configure its own `<service>.*`
queues, nothing else.

The permissions are computed by running `topology.declare_service` against a recorder, so what a
service may do is exactly what its start-up does, plus the publishes of shared/messaging.py.
Passwords are never committed: the generated file has password-less users (they cannot log in);
`apply` sets real passwords from `.local/secrets/` (created 0600 when missing) or the environment.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from shared import topology

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "deploy" / "rabbitmq" / "definitions.json"
DEFAULT_API = "http://guest:guest@127.0.0.1:15672/api"
HASHING = "rabbit_password_hashing_sha256"
NOTHING = "^$"  # matches no resource: the default exchange is checked as "amq.default"

#: Exchanges every service publishes to from shared/messaging.py: events, retries and parking.
SERVICE_PUBLISHES = (topology.EVENTS, topology.RETRY, topology.DEAD)
OPS = "ops"
#: the console's operations page: reads queues through the management API (issue 18)
CONSOLE_MONITOR = "console-monitor"
#: the user all portals shared before each had its own (issue 14): `apply` deletes it
LEGACY_PORTAL = "portal"
#: the portal the local services register a development key for (services/booking/app.py)
LOCAL_PORTALS = ("dev-portal",)
PORTALS_ENV = "RABBITMQ_PORTALS"


@dataclass(frozen=True)
class Grant:
    """One user's rights in one vhost: regexes over resource names, as RabbitMQ checks them."""

    user: str
    configure: str
    write: str
    read: str
    tags: tuple[str, ...] = ()
    #: exchange -> (write, read) regexes over routing keys (topic authorisation)
    topics: Mapping[str, tuple[str, str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- topology, recorded


@dataclass
class Recording:
    """What `topology.declare_service` asks the broker for, in definitions form."""

    exchanges: dict[str, dict[str, Any]] = field(default_factory=dict)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    bindings: list[dict[str, Any]] = field(default_factory=list)

    async def declare_exchange(self, name: str, type: Any, *, durable: bool = False, **_: Any) -> None:
        kind = getattr(type, "value", type)
        self.exchanges[name] = {"name": name, "type": str(kind), "durable": durable, "auto_delete": False}

    async def declare_queue(
        self, name: str, *, durable: bool = False, arguments: Mapping[str, Any] | None = None, **_: Any
    ) -> _RecordedQueue:
        self.queues[name] = {
            "name": name,
            "durable": durable,
            "auto_delete": False,
            "arguments": dict(arguments or {}),
        }
        return _RecordedQueue(self, name)


@dataclass
class _RecordedQueue:
    recording: Recording
    name: str

    async def bind(self, exchange: str, routing_key: str = "", **_: Any) -> None:
        self.recording.bindings.append(
            {
                "source": exchange,
                "destination": self.name,
                "destination_type": "queue",
                "routing_key": routing_key,
                "arguments": {},
            }
        )


def _complete(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (the recorder does no I/O) without an event loop."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("topology declaration awaited real I/O while being recorded")


def record(queues: topology.ServiceQueues) -> Recording:
    rec = Recording()
    _complete(topology.declare_service(cast(Any, rec), queues))
    return rec


# --------------------------------------------------------------------------- permissions


def _pattern(names: Iterable[str], own_prefix: str | None = None) -> str:
    """An anchored regex matching exactly these names (own `<prefix>.*` names collapsed)."""
    parts: set[str] = set()
    for name in names:
        if own_prefix and name.startswith(own_prefix + "."):
            parts.add(re.escape(own_prefix + ".") + ".*")
        else:
            parts.add(re.escape(name))
    return f"^(?:{'|'.join(sorted(parts))})$" if parts else NOTHING


def service_grant(queues: topology.ServiceQueues, user: str | None = None) -> Grant:
    """What a service's start-up and its consumer need: nothing more (R12)."""
    rec = record(queues)
    configure = [*rec.queues]  # the shared exchanges come from the definitions (checked passively)
    # queue.bind: write on the queue, read on the exchange; a dead-letter exchange in a queue's
    # arguments: read on the queue, write on that exchange; consuming: read on the inbox.
    # replaying its own parked messages (shared/parking.py): read its parking, publish to the inbox
    # through consult.redeliver
    write = {b["destination"] for b in rec.bindings} | set(SERVICE_PUBLISHES) | {topology.REDELIVER}
    read = {b["source"] for b in rec.bindings} | {queues.inbox, queues.parking}
    for q in rec.queues.values():
        if dlx := q["arguments"].get("x-dead-letter-exchange"):
            write.add(dlx)
            read.add(q["name"])
    svc = queues.service
    return Grant(user or svc, _pattern(configure, svc), _pattern(write, svc), _pattern(read, svc), tags=())


def intake_keys(services: Mapping[str, topology.ServiceQueues] = topology.SERVICES) -> list[str]:
    return sorted({key for q in services.values() for key in q.intake})


def portal_grant(user: str) -> Grant:
    """Portals send commands to consult.intake with the intake routing keys, and read nothing."""
    keys = _pattern(intake_keys())
    return Grant(
        user, NOTHING, _pattern([topology.INTAKE]), NOTHING, topics={topology.INTAKE: (keys, NOTHING)}
    )


def ops_grant(user: str = OPS) -> Grant:
    """consultctl: see queues (management tag), read parked messages, replay via consult.redeliver."""
    parking = [q.parking for q in topology.SERVICES.values()]
    return Grant(user, NOTHING, _pattern([topology.REDELIVER]), _pattern(parking), tags=("management",))


def console_monitor_grant(user: str = CONSOLE_MONITOR) -> Grant:
    """The console's operations page: the `monitoring` tag (read-only management API: queues, their
    depth, consumers and rates) and AMQP read on the parking queues alone, which the management API's
    `get` of parked headers needs; it configures and writes nothing (a replay is the service's)."""
    parking = [q.parking for q in topology.SERVICES.values()]
    return Grant(user, NOTHING, NOTHING, _pattern(parking), tags=("monitoring",))


def grants(prefix: str = "", portals: Iterable[str] = ()) -> list[Grant]:
    """Every user the system needs, in `roles` order; `prefix` keeps tests' users apart."""
    out = [service_grant(q, prefix + name) for name, q in topology.SERVICES.items()]
    out += [portal_grant(prefix + topology.portal_user(p)) for p in portals]
    return [*out, ops_grant(prefix + OPS), console_monitor_grant(prefix + CONSOLE_MONITOR)]


def roles(portals: Iterable[str] = ()) -> list[str]:
    """The users by role name: the services, `portal.<id>` for each portal, ops, console-monitor."""
    return [*topology.SERVICES, *(topology.portal_user(p) for p in portals), OPS, CONSOLE_MONITOR]


def check_portal_id(portal_id: str) -> str:
    """A portal id fit for a user name, a password file and an environment variable."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", portal_id):
        raise ValueError(f"portal id {portal_id!r}: lower-case letters, digits and '-' only (at most 63)")
    return portal_id


def portals_from(given: Iterable[str] | None, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """`--portal` values, else RABBITMQ_PORTALS (comma-separated), else none."""
    env = os.environ if env is None else env
    ids = list(given or []) or [p.strip() for p in env.get(PORTALS_ENV, "").split(",") if p.strip()]
    return tuple(check_portal_id(p) for p in dict.fromkeys(ids))


# --------------------------------------------------------------------------- definitions


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(
    vhost: str = "/",
    passwords: Mapping[str, str] | None = None,
    *,
    prefix: str = "",
    admin: tuple[str, str] | None = None,
    with_topology: bool = True,
    portals: Iterable[str] = (),
) -> dict[str, Any]:
    """RabbitMQ definitions: vhost, users, permissions and the whole topology.

    `passwords` maps a role (booking, portal, ...) to its password; a role without one becomes a
    password-less user that cannot log in until `apply` sets one. `admin` (name, password) adds an
    administrator, for a broker that loads the file at boot and so creates no default user.
    `with_topology=False` leaves exchanges, queues and bindings to the services' own start-up.
    """
    passwords = passwords or {}
    portals = tuple(portals)
    users: list[dict[str, Any]] = []
    for g, role in zip(grants(prefix, portals), roles(portals), strict=True):
        pw = passwords.get(role)
        users.append(_user(g.user, pw, list(g.tags)))
    if admin:
        users.append(_user(admin[0], admin[1], ["administrator"]))
    rec = Recording()
    for q in topology.SERVICES.values() if with_topology else ():
        part = record(q)
        rec.exchanges.update(part.exchanges)
        rec.queues.update(part.queues)
        rec.bindings.extend(part.bindings)
    in_vhost = {"vhost": vhost}
    return {
        "users": users,
        "vhosts": [{"name": vhost}],
        "permissions": [
            {"user": g.user, **in_vhost, "configure": g.configure, "write": g.write, "read": g.read}
            for g in grants(prefix, portals)
        ],
        "topic_permissions": [
            {"user": g.user, **in_vhost, "exchange": ex, "write": w, "read": r}
            for g in grants(prefix, portals)
            for ex, (w, r) in sorted(g.topics.items())
        ],
        "exchanges": [{**e, **in_vhost, "internal": False, "arguments": {}} for e in rec.exchanges.values()],
        "queues": [{**q, **in_vhost} for q in rec.queues.values()],
        "bindings": [{**b, **in_vhost} for b in rec.bindings],
    }


def _user(name: str, password: str | None, tags: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "password_hash": password_hash(password) if password else "",
        "hashing_algorithm": HASHING,
        "tags": tags,
    }


def dumps(defs: Mapping[str, Any]) -> str:
    return json.dumps(defs, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- passwords


def env_name(role: str) -> str:
    """RABBITMQ_BOOKING_PASSWORD, RABBITMQ_PORTAL_SOUMU_PORTAL_PASSWORD, ..."""
    return f"RABBITMQ_{re.sub(r'[^A-Z0-9]', '_', role.upper())}_PASSWORD"


def secret_file(secrets_dir: Path, role: str) -> Path:
    return secrets_dir / f"rabbitmq-{role}.password"


def local_passwords(secrets_dir: Path, roles_: Iterable[str] | None = None) -> dict[str, str]:
    """Read each role's password from the secrets dir; create a random one (0600) if missing."""
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    out: dict[str, str] = {}
    for role in roles_ or roles():
        path = secret_file(secrets_dir, role)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            out[role] = path.read_text().strip()
            continue
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")  # URL-safe: goes into AMQP_URL unquoted
        out[role] = path.read_text().strip()
    return out


def env_passwords(env: Mapping[str, str] | None = None, portals: Iterable[str] = ()) -> dict[str, str]:
    env = os.environ if env is None else env
    wanted = roles(portals)
    missing = [env_name(r) for r in wanted if not env.get(env_name(r))]
    if missing:
        raise SystemExit(f"missing password variables: {', '.join(missing)}")
    return {r: env[env_name(r)] for r in wanted}


def amqp_url(base: str, user: str, password: str, vhost: str | None = None) -> str:
    """`base` (amqp[s]://host:port/vhost?...) with this user's credentials (and vhost if given)."""
    u = urlsplit(base)
    host = u.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}" + (f":{u.port}" if u.port else "")
    path = "/" + quote(vhost, safe="") if vhost is not None else u.path
    return urlunsplit((u.scheme, netloc, path, u.query, ""))


# --------------------------------------------------------------------------- a running broker


def apply(
    api: str,
    vhost: str,
    passwords: Mapping[str, str],
    *,
    prefix: str = "",
    with_topology: bool = True,
    portals: Iterable[str] = (),
    timeout: float = 30.0,
    wait: float = 0.0,
) -> dict[str, Any]:
    """Create or update the vhost, users, permissions and topology through the management API.

    Idempotent: existing users get the given password and tags again, existing queues are kept;
    the legacy shared `portal` user is deleted. `api` carries an administrator's credentials
    (http://user:pass@host:15672/api). `wait`: seconds to keep retrying while the management API
    does not answer yet (an init container's start).
    """
    portals = tuple(portals)
    if missing := [r for r in roles(portals) if not passwords.get(r)]:
        raise ValueError(f"no password for {missing}")
    defs = definitions(vhost, passwords, prefix=prefix, with_topology=with_topology, portals=portals)
    clean, auth = _api(api)
    deadline = time.monotonic() + wait
    with httpx.Client(auth=auth, timeout=timeout) as c:
        while True:  # a broker that just became healthy may not serve its management API yet
            try:
                r = c.post(f"{clean}/definitions", json=defs)
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
                continue
            if r.status_code < 500 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        if r.status_code >= 400:  # the import replaces each user's permissions in this vhost
            raise RuntimeError(f"definitions import refused ({r.status_code}): {r.text[:500]}")
        _drop_legacy_delay_queues(c, clean, vhost, defs)
        c.delete(f"{clean}/users/{quote(prefix + LEGACY_PORTAL, safe='')}")  # 404 once it is gone
    return defs


def _api(api: str) -> tuple[str, tuple[str, str] | None]:
    """The management API's URL without credentials, and the credentials."""
    u = httpx.URL(api)
    auth = (u.username, u.password) if u.username else None
    return str(u.copy_with(username=None, password=None)).rstrip("/"), auth


def add_portal(
    api: str,
    vhost: str,
    portal_id: str,
    password: str,
    *,
    portal_prefix: str = topology.PORTAL_USER_PREFIX,
    timeout: float = 30.0,
) -> str:
    """Create (or update) one portal's broker user with its rights in `vhost`; returns the user name.
    Onboarding a portal needs no other user's password: only this user is imported. `portal_prefix`
    is booking's BROKER_PORTAL_PREFIX (tests use their own, so they never touch the real users)."""
    user = topology.portal_user(check_portal_id(portal_id), portal_prefix)
    g = portal_grant(user)
    defs = {
        "users": [_user(user, password, list(g.tags))],
        "permissions": [
            {"user": user, "vhost": vhost, "configure": g.configure, "write": g.write, "read": g.read}
        ],
        "topic_permissions": [
            {"user": user, "vhost": vhost, "exchange": ex, "write": w, "read": r}
            for ex, (w, r) in sorted(g.topics.items())
        ],
    }
    clean, auth = _api(api)
    with httpx.Client(auth=auth, timeout=timeout) as c:
        r = c.post(f"{clean}/definitions", json=defs)
        if r.status_code >= 400:
            raise RuntimeError(f"definitions import refused ({r.status_code}): {r.text[:500]}")
    return user


def _drop_legacy_delay_queues(c: httpx.Client, api: str, vhost: str, defs: Mapping[str, Any]) -> None:
    """The classic `<svc>.retry.<n>s` queues that `<svc>.delay.<n>s` replaced, once they are empty
    (a message still waiting there is dead-lettered to its inbox as before; the next apply drops it)."""
    services = {q["name"].split(".delay.")[0] for q in defs.get("queues", []) if ".delay." in q["name"]}
    where = f"{api}/queues/{quote(vhost, safe='')}"
    listed = c.get(where, params={"columns": "name"})
    if listed.status_code != 200:
        return
    for q in listed.json():
        service, _, rest = str(q["name"]).partition(".retry.")
        if service in services and re.fullmatch(r"\d+s", rest):
            c.delete(f"{where}/{quote(q['name'], safe='')}", params={"if-empty": "true"})


def delete_users(api: str, names: Iterable[str], timeout: float = 10.0) -> None:
    """Delete these users (their connections are closed by the broker); unknown names are ignored."""
    clean, auth = _api(api)
    with httpx.Client(auth=auth, timeout=timeout) as c:
        for name in names:
            c.delete(f"{clean}/users/{quote(name, safe='')}")


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m deploy.rabbitmq_users",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="write deploy/rabbitmq/definitions.json (no passwords)")
    gen.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    for name in ("apply", "render"):
        p = sub.add_parser(name, help="set users on a broker" if name == "apply" else "print definitions")
        p.add_argument("--vhost", default="/")
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument(
            "--secrets", type=Path, help="dir of rabbitmq-<user>.password files (made 0600 if missing)"
        )
        src.add_argument("--from-env", action="store_true", help="passwords from RABBITMQ_<USER>_PASSWORD")
        p.add_argument("--prefix", default="", help="prefix for user names (tests)")
        p.add_argument(
            "--portal",
            action="append",
            help=f"a portal's id: user portal.<id> (repeatable; else {PORTALS_ENV})",
        )
    sub.choices["apply"].add_argument("--wait", type=float, default=60.0, help="seconds to wait for the API")
    sub.choices["apply"].add_argument(
        "--api", default=os.environ.get("RABBITMQ_MANAGEMENT_URL", DEFAULT_API), help="admin's management API"
    )
    sub.choices["render"].add_argument("--out", type=Path, help="file to write (0600); default stdout")
    sub.choices["render"].add_argument(
        "--admin", metavar="NAME", help="add an administrator; password from RABBITMQ_ADMIN_PASSWORD"
    )
    url = sub.add_parser("url", help="print a role's AMQP URL (a portal's: portal.<id>)")
    url.add_argument("role")
    url.add_argument("--secrets", type=Path, default=ROOT / ".local" / "secrets")
    url.add_argument("--base", default="amqp://127.0.0.1:5672/")
    portal = sub.add_parser("portal", help="give one portal its broker user, or take it away")
    portal.add_argument("action", choices=("add", "revoke"))
    portal.add_argument("portal_id")
    portal.add_argument("--vhost", default="/")
    portal.add_argument("--secrets", type=Path, default=ROOT / ".local" / "secrets")
    portal.add_argument("--from-env", action="store_true", help="password from RABBITMQ_PORTAL_<ID>_PASSWORD")
    portal.add_argument("--base", default="amqp://127.0.0.1:5672/", help="broker URL the printed URL is on")
    portal.add_argument(
        "--api", default=os.environ.get("RABBITMQ_MANAGEMENT_URL", DEFAULT_API), help="admin's management API"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.cmd == "generate":
        text = dumps(definitions())
        if a.check:
            if not DEFINITIONS.exists() or DEFINITIONS.read_text() != text:
                print(f"{DEFINITIONS.relative_to(ROOT)} is stale: python -m deploy.rabbitmq_users generate")
                return 1
            return 0
        DEFINITIONS.parent.mkdir(parents=True, exist_ok=True)
        DEFINITIONS.write_text(text)
        print(f"wrote {DEFINITIONS.relative_to(ROOT)}")
        return 0
    if a.cmd == "url":
        print(amqp_url(a.base, a.role, local_passwords(a.secrets, [a.role])[a.role]))
        return 0
    if a.cmd == "portal":
        return _portal_command(a)
    portals = portals_from(a.portal)
    pw = env_passwords(portals=portals) if a.from_env else local_passwords(a.secrets, roles(portals))
    if a.cmd == "render":
        admin = None
        if a.admin:
            if not (admin_pw := os.environ.get("RABBITMQ_ADMIN_PASSWORD")):
                raise SystemExit("RABBITMQ_ADMIN_PASSWORD is not set")
            admin = (a.admin, admin_pw)
        text = dumps(definitions(a.vhost, pw, prefix=a.prefix, admin=admin, portals=portals))
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return 0
    defs = apply(a.api, a.vhost, pw, prefix=a.prefix, wait=a.wait, portals=portals)
    where = httpx.URL(a.api).host
    print(f"rabbitmq  vhost {a.vhost!r} on {where}: users {', '.join(u['name'] for u in defs['users'])}")
    return 0


def _portal_command(a: argparse.Namespace) -> int:
    portal_id = check_portal_id(a.portal_id)
    user = topology.portal_user(portal_id)
    if a.action == "revoke":
        delete_users(a.api, [user])
        print(f"rabbitmq  {user} deleted: the portal can no longer send commands over AMQP")
        return 0
    password = (
        env_passwords(portals=[portal_id])[user] if a.from_env else local_passwords(a.secrets, [user])[user]
    )
    add_portal(a.api, a.vhost, portal_id, password)
    print(f"rabbitmq  {user} may publish intake commands in vhost {a.vhost!r}; it sets user_id={user}")
    print(amqp_url(a.base, user, password, a.vhost if a.vhost != "/" else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
