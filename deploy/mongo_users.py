"""MongoDB users: one per service, limited to its own database (R12), plus a read-only `ops` user.

    python -m deploy.mongo_users apply --from-env    # MONGO_ADMIN_URL, MONGO_<ROLE>_PASSWORD
    python -m deploy.mongo_users plan                # who gets which role, as JSON (no secrets)
    python -m deploy.mongo_users url booking --base mongodb://mongo:27017/   # password from env

Runs as an init step against a real MongoDB with authorisation on (the mongo image enables it when
MONGO_INITDB_ROOT_USERNAME/PASSWORD are set). Idempotent: an existing user gets the password and
roles again, so a rotated password or a new service is applied on the next start, which an
/docker-entrypoint-initdb.d script (first start of an empty volume only) would not do.
The user list comes from shared/topology.py's SERVICES; database names from ServiceSettings.database.
FerretDB (the local dev server, v1.24.2) has no user management (createUser: CommandNotFound): locally
the services connect without a user; deploy/SECURITY.md says what is and is not tested.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pymongo import MongoClient
from pymongo.errors import OperationFailure

from shared import topology

AUTH_DB = "admin"  # where the users live; services connect with ?authSource=admin
OPS = "ops"
USER_EXISTS, COMMAND_NOT_FOUND = 51003, 59

Role = dict[str, str]


def plan(prefix: str = "") -> dict[str, list[Role]]:
    """user -> roles. A service reads and writes its own database and nothing else; ops only reads.

    `prefix` is ServiceSettings.db_prefix (the database names) and also prefixes the user names,
    so a test run's users never collide with the real ones.
    """
    out: dict[str, list[Role]] = {
        prefix + svc: [{"role": "readWrite", "db": prefix + svc}] for svc in topology.SERVICES
    }
    out[prefix + OPS] = [{"role": "read", "db": prefix + svc} for svc in topology.SERVICES]
    return out


def roles() -> list[str]:
    return [*topology.SERVICES, OPS]


def env_name(role: str) -> str:
    return f"MONGO_{role.upper()}_PASSWORD"


def env_passwords(env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    if missing := [env_name(r) for r in roles() if not env.get(env_name(r))]:
        raise SystemExit(f"missing password variables: {', '.join(missing)}")
    return {r: env[env_name(r)] for r in roles()}


def service_url(base: str, user: str, password: str) -> str:
    """`base` (mongodb://host:port/?tls=true...) with this user and authSource=admin."""
    u = urlsplit(base)
    host = u.netloc.rsplit("@", 1)[-1]
    params = [p for p in u.query.split("&") if p and not p.startswith("authSource=")]
    query = "&".join([*params, f"authSource={AUTH_DB}"])
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((u.scheme, netloc, u.path or "/", query, ""))


def _where(url: str) -> str:
    """The URL without its credentials, for messages."""
    return url.rsplit("@", maxsplit=1)[-1]


def apply(admin_url: str, passwords: Mapping[str, str], *, prefix: str = "") -> list[str]:
    """Create or update every user; returns their names. `admin_url` has a root/userAdmin login."""
    done: list[str] = []
    with MongoClient[dict[str, Any]](admin_url, serverSelectionTimeoutMS=10_000) as client:
        db = client[AUTH_DB]
        for role, (user, user_roles) in zip(roles(), plan(prefix).items(), strict=True):
            spec: dict[str, Any] = {"pwd": passwords[role], "roles": user_roles}
            try:
                db.command({"createUser": user, **spec})
            except OperationFailure as exc:
                if exc.code == COMMAND_NOT_FOUND:
                    raise SystemExit(f"{_where(admin_url)}: no user management (FerretDB?)") from exc
                if exc.code != USER_EXISTS:
                    raise
                db.command({"updateUser": user, **spec})
            done.append(user)
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m deploy.mongo_users",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("apply", help="create or update the users (passwords from MONGO_<ROLE>_PASSWORD)")
    p.add_argument("--from-env", action="store_true", required=True)
    p.add_argument("--admin-url", default=os.environ.get("MONGO_ADMIN_URL"), help="default: $MONGO_ADMIN_URL")
    p.add_argument("--prefix", default=os.environ.get("DB_PREFIX", ""))
    pl = sub.add_parser("plan", help="print users and roles")
    pl.add_argument("--prefix", default="")
    u = sub.add_parser("url", help="print a role's MONGODB_URL (password from MONGO_<ROLE>_PASSWORD)")
    u.add_argument("role", choices=roles())
    u.add_argument("--base", default="mongodb://mongo:27017/")
    a = ap.parse_args(argv)
    if a.cmd == "plan":
        print(json.dumps(plan(a.prefix), indent=2))
        return 0
    if a.cmd == "url":
        print(service_url(a.base, a.role, env_passwords()[a.role]))
        return 0
    if not a.admin_url:
        raise SystemExit("MONGO_ADMIN_URL (or --admin-url) is required")
    users = apply(a.admin_url, env_passwords(), prefix=a.prefix)
    print(f"mongo     users on {_where(a.admin_url)}: {', '.join(users)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
