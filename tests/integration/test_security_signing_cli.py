"""consultctl flags a portal as having to sign its intake requests, and hands out its secret (issue 8).

The commands run through typer's CliRunner against the same FerretDB database as the booking service
running in-process; the service's answers prove the flag took effect (and was taken back)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from typer.testing import CliRunner

from examples import forms
from ops.cli import app
from services.booking.signing import SIGNATURE, TIMESTAMP, sign
from tests import support
from tests.support.booking import KG, PORTAL_KEY, Harness, running

PATH = f"/v1/offices/{KG}/bookings"


async def consultctl(h: Harness, *args: str) -> Any:
    env = {
        "ENVIRONMENT": "test",
        "MONGODB_URL": support.MONGODB_URL,
        "DB_PREFIX": h.settings.db_prefix,
        "SECRET_KEY": h.settings.secret_key,
        "COLUMNS": "200",
    }
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def post(h: Harness, key: str, secret: str | None = None) -> httpx.Response:
    body = json.dumps(forms.kg_form(h.policy(KG), h.now.date() + timedelta(days=2), h.now)).encode()
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}
    if secret is not None:
        stamp = str(int(h.now.timestamp()))
        headers |= {TIMESTAMP: stamp, SIGNATURE: sign(secret, stamp, "POST", PATH, body)}
    return await h.client.post(PATH, content=body, headers=headers | {"content-type": "application/json"})


async def test_consultctl_requires_signing_for_one_portal_and_takes_it_back(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with running(make_settings, amqp_url) as h:
        created = await consultctl(h, "portal-key", "create", "--portal", "cli-portal", "--office", KG)
        assert created.exit_code == 0, created.output
        key = created.output.strip()
        assert (await post(h, key)).status_code == 202  # not flagged yet

        flagged = await consultctl(h, "portal-key", "require-signing", "cli-portal")
        assert flagged.exit_code == 0, flagged.output
        assert "required (1 key)" in flagged.output
        unsigned = await post(h, key)
        assert unsigned.status_code == 401 and "must sign" in unsigned.json()["detail"]
        assert (await post(h, PORTAL_KEY)).status_code == 202  # another portal is not affected

        shown = await consultctl(h, "portal-key", "signing-secret", "cli-portal")
        assert shown.exit_code == 0, shown.output
        secret = shown.output.strip()
        assert (await post(h, key, secret)).status_code == 202
        assert (await post(h, key, "not-the-secret")).status_code == 401

        off = await consultctl(h, "portal-key", "require-signing", "cli-portal", "--off")
        assert off.exit_code == 0 and "no longer required" in off.output, off.output
        assert (await post(h, key)).status_code == 202


async def test_consultctl_signing_commands_refuse_an_unknown_portal(
    make_settings: Callable[..., Any], amqp_url: str
) -> None:
    async with running(make_settings, amqp_url) as h:
        for cmd in ("require-signing", "signing-secret"):
            result = await consultctl(h, "portal-key", cmd, "no-such-portal")
            assert result.exit_code == 1, result.output
            assert "no portal keys for no-such-portal" in result.output
