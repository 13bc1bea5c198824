"""People behind keys (R10, R11): person ids, and a console credential acting for a named person.

Every staff and auditor credential names its `person`, so what a key did is what a person did, and
four eyes compare people, not keys. A credential made for the console (`delegates: true`) is one key
for many people: each request names the person in `X-Acting-Person` and may narrow the roles
(`X-Acting-Roles`) and offices (`X-Acting-Offices`) to some the credential holds; what it asserts is
all it gets (nothing asserted: nothing). The scheduler also reads `X-Acting-Counsellor`. A plain
credential is its own person: X-Acting-* headers from it are refused, never believed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

from fastapi import HTTPException, Request

from shared.text import is_clean

PERSON_ID = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
PREFIX = "x-acting-"
PERSON, ROLES, OFFICES, COUNSELLOR = (f"{PREFIX}{h}" for h in ("person", "roles", "offices", "counsellor"))
EVERY_OFFICE = "*"
#: the role, in every service with HTTP keys, that may replay the service's parked messages
#: (shared/parking.py; the console's operations page)
OPERATOR = "operator"
#: names the services record for their own acts (`by="scheduler"`, `recorded_by="system"`, the access
#: log's `anonymous`): never a person's, so what a person did never reads as automatic
RESERVED = frozenset({"anonymous", "system", "booking", "scheduler", "notifier", "audit"})
NO_PERSON = "a console credential acts only for a named person"


class Refusal(Exception):
    """A request whose credential may not act as it asks: 401 or 403 with the reason."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


def http_error(exc: Refusal) -> HTTPException:
    """The refusal as an HTTP answer (a 401 asks for a Bearer key)."""
    challenge = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return HTTPException(exc.status_code, exc.reason, headers=challenge)


def is_person_id(value: str) -> bool:
    return PERSON_ID.fullmatch(value) is not None and value not in RESERVED


def person_id(value: str) -> str:
    """`value` if it is a person id (`tanaka.hanako`), else ValueError."""
    if not is_person_id(value):
        raise ValueError(
            f"{value!r} is not a person id (a-z, 0-9, . _ @ -; at most 64, from a-z or 0-9; "
            f"none of {', '.join(sorted(RESERVED))})"
        )
    return value


def derive_person(name: str) -> str:
    """The default person id of a credential made for `name`: NFKC, lower case, every run of other
    characters one `-` (`Tanaka Hanako` -> `tanaka-hanako`). A name with no such letters (`監査 花子`)
    gives none: then the person is named explicitly (ValueError)."""
    slug = re.sub(r"[^a-z0-9._@-]+", "-", unicodedata.normalize("NFKC", name).lower())
    slug = slug.strip("-._@")[:64].rstrip("-._@")
    if not is_person_id(slug):
        raise ValueError(f"no person id follows from the name {name!r}: name the person (--person)")
    return slug


def person_for(person: str | None, name: str) -> str:
    """A new credential's person: the one named (checked), else derived from the holder's name."""
    return person_id(person) if person else derive_person(name)


@dataclass(frozen=True)
class Acting:
    """Whom a console request acts for, with what it asserted (each one the credential holds)."""

    person: str
    roles: frozenset[str]
    offices: tuple[str, ...]
    counsellor: str | None = None


def _listed(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def acting(
    headers: Iterable[tuple[str, str]],
    *,
    delegates: bool,
    roles: Collection[str],
    offices: Collection[str] | None = None,
) -> Acting | None:
    """The person a request acts for: None for a plain credential (it is its own person), else the
    asserted person, roles and (where the service has them, `offices` not None) offices.

    Refused: any X-Acting-* header from a plain credential (403); a console credential's request
    without a valid X-Acting-Person (401); a role or an office the credential does not hold (403)."""
    sent = {k.lower(): v for k, v in headers if k.lower().startswith(PREFIX)}
    if not delegates:
        if sent:
            raise Refusal(403, f"{', '.join(sorted(sent))}: only a console credential acts for a person")
        return None
    person = sent.get(PERSON, "").strip()
    if not person:
        raise Refusal(401, f"{NO_PERSON} (X-Acting-Person)")
    if not is_person_id(person):
        raise Refusal(401, f"{NO_PERSON}: X-Acting-Person is not a person id")
    asked_roles = _listed(sent.get(ROLES))
    if extra := sorted(set(asked_roles) - set(roles)):
        raise Refusal(403, f"X-Acting-Roles: the console credential does not hold {', '.join(extra)}")
    asked_offices: list[str] = []
    if offices is not None:
        asked_offices = _listed(sent.get(OFFICES))
        if EVERY_OFFICE not in offices and (extra := sorted(set(asked_offices) - set(offices))):
            raise Refusal(403, f"X-Acting-Offices: the console credential does not serve {', '.join(extra)}")
    counsellor = sent.get(COUNSELLOR, "").strip() or None
    if counsellor is not None and (len(counsellor) > 64 or not is_clean(counsellor)):
        raise Refusal(401, "X-Acting-Counsellor is not a counsellor id")
    return Acting(person, frozenset(asked_roles), tuple(dict.fromkeys(asked_offices)), counsellor)


class Credential(Protocol):
    """A service's view of a stored key (booking's `Credential`, the scheduler's `StaffKey`)."""

    @property
    def key_id(self) -> str: ...

    @property
    def actor(self) -> str: ...

    def acting_for(self, headers: Iterable[tuple[str, str]]) -> Self: ...


C = TypeVar("C", bound=Credential)


def as_requested(request: Request, cred: C) -> C:
    """The credential as this request uses it (the console's: for the person named), with the key's
    id and the person kept for the access record (R10); a refused request is recorded under the
    key's own holder. Raises the refusal as HTTP."""
    request.state.credential = cred.key_id
    request.state.actor = cred.actor
    try:
        cred = cred.acting_for(request.headers.items())
    except Refusal as exc:
        raise http_error(exc) from exc
    request.state.actor = cred.actor
    return cred
