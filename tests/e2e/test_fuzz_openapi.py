"""Schemathesis against the booking and audit OpenAPI documents of the running stack: no input the
documents allow (and none they nearly allow) makes a service answer 5xx.

Bounded: at most MAX_EXAMPLES generated cases per operation, no shrinking, no example database; the
whole run is a few hundred requests. A failure names the operation, the status and the input (as a
curl command) to replay.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from tests.support.stack import APPROVER_KEY, BOOKING_STAFF_KEY, PORTAL_KEY, Stack

MAX_EXAMPLES = 15
BUDGET_SECONDS = 25.0  # per service: later cases are skipped (not sent) once it is spent
SENT: dict[str, int] = {}  # cases sent per operation
SKIP_TAGS = {"ops"}  # health, readiness and the AsyncAPI document take no input


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def headers_for(service: str, tags: list[str]) -> dict[str, str]:
    if service == "audit":
        return bearer(APPROVER_KEY)  # holds every audit role's rights (reader and approver)
    return bearer(BOOKING_STAFF_KEY if "staff" in tags else PORTAL_KEY)


def fuzz_operation(
    op: Any, base_url: str, headers: dict[str, str], failures: list[str], deadline: float
) -> int:
    """Send up to MAX_EXAMPLES generated cases; record each 5xx. Returns how many were sent."""
    sent = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def run(case: Any) -> None:
        nonlocal sent
        if sent and time.monotonic() > deadline:  # the first case always goes (generating a large
            return  # body can take longer than the operation's share on a busy machine)
        sent += 1
        response = case.call(base_url=base_url, headers=headers, timeout=15)
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except BaseException as exc:  # schemathesis raises its failures as a BaseExceptionGroup
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            failures.append(
                f"{op.method.upper()} {op.path} -> {response.status_code}: "
                f"{case.as_curl_command(headers)}\n  {response.text[:300]}"
            )

    run()
    return sent


def fuzz(service: str, base_url: str) -> tuple[int, list[str]]:
    """Every operation of the service; (cases sent, failures as 'METHOD path -> status: curl')."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    sent = 0
    ops = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]  # unreadable: raises
    ops = [op for op in ops if not SKIP_TAGS & set(op.definition.raw.get("tags", []))]
    for op in ops:  # each operation gets its share of the budget, so a slow one cannot starve the rest
        deadline = time.monotonic() + BUDGET_SECONDS / len(ops)
        headers = headers_for(service, op.definition.raw.get("tags", []))
        n = fuzz_operation(op, base_url, headers, failures, deadline)
        SENT[f"{service} {op.method.upper()} {op.path}"] = n
        sent += n
    return sent, failures


@pytest.mark.parametrize("service", ["booking", "audit"])
async def test_no_input_makes_a_server_error(stack: Stack, service: str) -> None:
    sent, failures = await asyncio.to_thread(fuzz, service, stack.urls[service])
    mine = {k: n for k, n in SENT.items() if k.startswith(f"{service} ")}
    assert len(mine) >= 9 and all(mine.values()), mine  # every operation was exercised
    assert sent == sum(mine.values())
    assert not failures, f"{len(failures)} 5xx answers:\n" + "\n".join(failures[:20])


async def test_huge_offset_is_refused_not_a_server_error(stack: Stack) -> None:
    """Found by this fuzzing: an offset beyond 64 bits reached MongoDB (OverflowError, 500)."""
    async with stack.client("booking", headers=bearer(BOOKING_STAFF_KEY)) as c:
        r = await c.get("/v1/offices/kushiro-gyosei/bookings", params={"offset": 2**64})
    assert r.status_code == 422, r.text
