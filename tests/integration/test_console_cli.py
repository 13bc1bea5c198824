"""`consultctl console ...` makes the first account of an office, and `make up`'s development
accounts; the console signs them in (against the real servers)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.console.config import Settings
from services.console.ops import DEV_ACCOUNTS, ensure_dev_accounts
from tests.support.audit import run_consultctl
from tests.support.console import PASSWORD, running_console, sign_in


def consultctl(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_consultctl(settings, "console", *args)


async def test_consultctl_creates_an_offices_first_account_that_signs_in(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    async with running_console(make_settings) as c:
        args = ["--person", "tanaka.hanako", "--name", "田中花子", "--role", "staff"]
        made = await asyncio.to_thread(
            consultctl, c.settings, "create-account", *args, "--office", "kushiro-gyosei",
            "--password-file", str(secret),
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert "tanaka.hanako: staff kushiro-gyosei" in made.stdout
        again = await asyncio.to_thread(
            consultctl, c.settings, "create-account", *args, "--office", "kushiro-gyosei",
            "--password-file", str(secret),
        )  # fmt: skip
        assert again.returncode == 1 and "not created" in again.stderr
        no_office = await asyncio.to_thread(
            consultctl, c.settings, "create-account", *args, "--password-file", str(secret)
        )
        assert no_office.returncode == 1 and "office" in no_office.stderr
        listed = await asyncio.to_thread(consultctl, c.settings, "accounts")
        assert listed.stdout.startswith("tanaka.hanako\t田中花子\tstaff\tkushiro-gyosei")
        r = await sign_in(c.http, "tanaka.hanako")
        assert r.status_code == 303 and r.headers["location"] == "/offices/kushiro-gyosei/today"
        uri = await asyncio.to_thread(consultctl, c.settings, "totp", "tanaka.hanako")
        assert uri.stdout.startswith("otpauth://totp/") and "tanaka.hanako" in uri.stdout
        assert (await sign_in(c.client(), "tanaka.hanako")).status_code == 401  # a code is needed now


async def test_make_up_keeps_the_development_accounts_and_their_password(
    make_settings: Callable[..., Any], tmp_path: Path
) -> None:
    async with running_console(make_settings) as c:
        path = tmp_path / "console-dev-password.txt"
        made = await ensure_dev_accounts(path, c.settings)
        assert made == [a[0] for a in DEV_ACCOUNTS if a[0] != "dev.counsellor"]  # no demo office here
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert await ensure_dev_accounts(path, c.settings) == made  # idempotent
        r = await sign_in(c.http, "dev.staff", path.read_text().strip())
        assert r.status_code == 303
