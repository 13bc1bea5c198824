"""Person accounts: who signs in to the console, with which roles, for which offices.

Plain Python, no I/O (the store is services/console/store.py). Passwords are Argon2id hashes
(argon2-cffi, its RFC 9106 low-memory profile); a TOTP second factor (pyotp) is optional per account,
its secret sealed at rest. The roles are the ones the services know a person by (PEOPLE-SPEC):
staff act for their offices, a counsellor reads their own schedule, auditors search the records and
request disclosures, disclosure approvers decide on them (R11, four eyes), operators watch the
queues and replay parked messages (the operations page).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

Role = Literal["staff", "counsellor", "auditor", "disclosure-approver", "operator"]
ROLES: tuple[Role, ...] = ("staff", "counsellor", "auditor", "disclosure-approver", "operator")
ROLE_NAMES: dict[str, str] = {
    "staff": "職員",
    "counsellor": "相談員",
    "auditor": "監査担当",
    "disclosure-approver": "開示承認者",
    "operator": "運用担当",
}
#: a person id, as the services take it in X-Acting-Person (PEOPLE-SPEC)
PERSON_ID = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD = 12

HASHER = PasswordHasher()  # Argon2id, argon2-cffi's defaults (RFC 9106 low-memory)


class AccountError(ValueError):
    """An account that cannot be made as asked."""


@dataclass(frozen=True)
class Account:
    person_id: str
    name: str
    roles: tuple[Role, ...]
    password_hash: str
    offices: tuple[str, ...] = ()
    counsellor_id: str | None = None
    counsellor_office: str | None = None
    totp_secret: str | None = None  # opened; sealed in the store
    active: bool = True
    #: sign-out everywhere: sessions begun before this instant are over
    sessions_valid_from: datetime | None = None
    created_at: datetime | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def has(self, role: str) -> bool:
        return role in self.roles

    def may_act_for(self, office_id: str) -> bool:
        return self.has("staff") and office_id in self.offices

    def check_password(self, password: str) -> bool:
        try:
            return HASHER.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def check_totp(self, code: str, at: datetime) -> int | None:
        """The time step the code is valid for (one step of clock drift either way), or None."""
        if not self.totp_secret:
            return None
        totp = pyotp.TOTP(self.totp_secret)
        code = code.strip().replace(" ", "")
        for drift in (0, -1, 1):
            step = int(at.timestamp()) // totp.interval + drift
            if code.isdigit() and pyotp.utils.strings_equal(totp.generate_otp(step), code):
                return step
        return None


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password has at least {MIN_PASSWORD} characters")
    return HASHER.hash(password)


def new_account(
    *,
    person_id: str,
    name: str,
    roles: list[str],
    password: str,
    offices: list[str],
    counsellor_id: str | None,
    known_offices: set[str],
    now: datetime,
) -> Account:
    """A valid account, or AccountError naming what is wrong."""
    if not PERSON_ID.match(person_id):
        raise AccountError(f"person id {person_id!r}: lower-case letters, digits and . _ @ - (64 at most)")
    if not name.strip():
        raise AccountError("a display name is required")
    if not roles or any(r not in ROLES for r in roles):
        raise AccountError(f"roles are some of {', '.join(ROLES)}; got {roles}")
    if bad := [o for o in offices if o not in known_offices]:
        raise AccountError(f"unknown offices {bad}; known: {sorted(known_offices)}")
    if "staff" in roles and not offices:
        raise AccountError("staff act for at least one office (--office)")
    if "counsellor" in roles and (not counsellor_id or len(offices) != 1):
        raise AccountError("a counsellor names their counsellor id and their one office")
    return Account(
        person_id=person_id,
        name=name.strip(),
        roles=tuple(r for r in ROLES if r in roles),
        password_hash=hash_password(password),
        offices=tuple(offices),
        counsellor_id=counsellor_id if "counsellor" in roles else None,
        counsellor_office=offices[0] if "counsellor" in roles else None,
        created_at=now,
    )


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(account: Account, secret: str, issuer: str = "相談予約コンソール") -> str:
    """The otpauth:// URI an authenticator app reads (shown once, as text or a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=account.person_id, issuer_name=issuer)
