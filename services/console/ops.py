"""Ops tasks on the console's database, behind `consultctl console` and `python -m services.console.ops`:
person accounts (the first one of an office is made here), passwords, the TOTP second factor, and the
development accounts `make up` keeps (refused in prod).

    python -m services.console.ops ensure-dev-accounts .local/console-dev-password.txt
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from services.console.accounts import (
    Account,
    AccountError,
    hash_password,
    new_account,
    new_totp_secret,
    totp_uri,
)
from services.console.config import Settings
from services.console.store import AccountExists, Stores
from shared.clock import SystemClock
from shared.mongo import connect
from shared.sealing import SecretSealer

#: the development accounts `make up` keeps: (person id, name, roles, offices, counsellor id)
DEV_ACCOUNTS: tuple[tuple[str, str, list[str], list[str] | None, str | None], ...] = (
    ("dev.staff", "開発 職員", ["staff"], None, None),  # None: every office
    ("dev.auditor", "開発 監査担当", ["auditor", "disclosure-approver"], [], None),
    ("dev.approver", "開発 開示承認者", ["auditor", "disclosure-approver"], [], None),
    ("dev.counsellor", "青木（デモ相談員）", ["counsellor"], ["demo-town"], "demo-aoki"),
    ("dev.operator", "開発 運用担当", ["operator"], [], None),
)


@asynccontextmanager
async def opened(settings: Settings | None = None) -> AsyncIterator[Stores]:
    settings = settings or Settings()
    client = connect(settings.mongodb_url, app_name="consultctl")
    try:
        # the same sealer the service derives (shared/runtime.py), so a TOTP secret opens there
        sealer = SecretSealer.from_secret(settings.secret_key, "service:console")
        yield Stores(client[settings.database("console")], sealer, settings.secret_key)
    finally:
        await client.close()


async def create_account(
    *,
    person_id: str,
    name: str,
    roles: list[str],
    offices: list[str],
    password: str,
    counsellor_id: str | None = None,
    settings: Settings | None = None,
) -> Account:
    settings = settings or Settings()
    account = new_account(
        person_id=person_id,
        name=name,
        roles=roles,
        password=password,
        offices=offices,
        counsellor_id=counsellor_id,
        known_offices=set(settings.policies().ids()),
        now=SystemClock().now(),
    )
    async with opened(settings) as stores:
        await stores.accounts.create(account)
    return account


async def set_password(person_id: str, password: str, settings: Settings | None = None) -> None:
    """A new password; every session of the person ends."""
    async with opened(settings) as stores:
        account = await stores.accounts.get(person_id)
        if account is None:
            raise AccountError(f"no account {person_id}")
        now = SystemClock().now()
        await stores.accounts.put(
            replace(account, password_hash=hash_password(password), sessions_valid_from=now)
        )


async def enable_totp(person_id: str, settings: Settings | None = None) -> str:
    """Turn on the TOTP second factor; the otpauth:// URI for the person's app (shown once)."""
    async with opened(settings) as stores:
        account = await stores.accounts.get(person_id)
        if account is None:
            raise AccountError(f"no account {person_id}")
        secret = new_totp_secret()
        await stores.accounts.put(replace(account, totp_secret=secret))
    return totp_uri(account, secret)


async def deactivate(person_id: str, settings: Settings | None = None) -> None:
    async with opened(settings) as stores:
        account = await stores.accounts.get(person_id)
        if account is None:
            raise AccountError(f"no account {person_id}")
        await stores.accounts.put(replace(account, active=False, sessions_valid_from=SystemClock().now()))


async def accounts(settings: Settings | None = None) -> list[Account]:
    async with opened(settings) as stores:
        return await stores.accounts.all()


def dev_password(path: Path) -> str:
    """The development password kept in `path`, created there (mode 600) on first use."""
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password


async def ensure_dev_accounts(path: Path, settings: Settings | None = None) -> list[str]:
    """Create the development accounts that are missing (password from `path`); their ids."""
    settings = settings or Settings()
    if settings.environment == "prod":
        raise SystemExit("development accounts are refused in prod; use `consultctl console create-account`")
    password = dev_password(path)
    every = list(settings.policies().ids())
    made = []
    for person_id, name, roles, offices, counsellor in DEV_ACCOUNTS:
        if counsellor and offices and offices[0] not in every:
            continue  # the demo office is not loaded (EXTRA_OFFICES_DIR)
        with contextlib.suppress(AccountExists):  # kept as it is: its password may have changed
            await create_account(
                person_id=person_id,
                name=name,
                roles=roles,
                offices=every if offices is None else offices,
                password=password,
                counsellor_id=counsellor,
                settings=settings,
            )
        made.append(person_id)
    return made


USAGE = "usage: python -m services.console.ops ensure-dev-accounts PASSWORD_FILE"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "ensure-dev-accounts":
        print(USAGE, file=sys.stderr)
        return 2
    ids = asyncio.run(ensure_dev_accounts(Path(argv[1])))
    print(f"development console accounts ({', '.join(ids)}); password in {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
