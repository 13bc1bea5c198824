"""The clock a test can move in another process (CLOCK_OFFSET_FILE), and its refusal outside tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.clock import OffsetClock, SystemClock
from shared.settings import ServiceSettings


def test_the_offset_clock_follows_the_file_as_it_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    clock = OffsetClock(path)

    def moved_by(seconds: float) -> bool:
        before = datetime.now(UTC)
        at = clock.now()
        after = datetime.now(UTC)
        offset = timedelta(seconds=seconds)
        return before + offset <= at <= after + offset

    assert moved_by(0)  # no file yet: the system clock
    OffsetClock.write_offset(path, 3600.0)
    assert moved_by(3600.0)
    OffsetClock.write_offset(path, -7200.5)
    assert moved_by(-7200.5)


def test_only_a_test_environment_may_move_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    assert isinstance(ServiceSettings(environment="test", clock_offset_file=path).clock(), OffsetClock)
    assert isinstance(ServiceSettings(environment="test").clock(), SystemClock)
    for environment in ("dev", "prod"):
        with pytest.raises(ValidationError, match="CLOCK_OFFSET_FILE"):
            ServiceSettings(
                environment=environment,
                clock_offset_file=path,
                secret_key="x" * 32,
                amqp_url="amqp://svc:pw@127.0.0.1:5672/",
            )
