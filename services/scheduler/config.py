"""Scheduler service settings."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, model_validator

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "scheduler"
    http_port: int = 8002
    staff_api_key: str | None = Field(
        None,
        description="development and tests only: a staff key for every office (staff dev-staff), "
        "registered at start-up; refused in prod. Real keys: consultctl scheduler staff-key create",
    )
    replica_id: str = Field(
        "", description="this replica's name in the timer lease; default host:port, stable across restarts"
    )
    lease_seconds: float = Field(15.0, description="the timer lease expires this long after its last renewal")
    timer_poll_seconds: float = Field(1.0, description="lease renewal and due-timer sweep interval")
    takeover_read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="bound on a take-over's reads of the timers; a stalled take-over starts again "
        "with twice the bound",
    )
    timer_horizon_seconds: float = Field(
        3600.0, description="timers due within this are armed in APScheduler"
    )
    search_days: int = Field(28, description="R05: how many days ahead alternatives are sought")
    counsellors_file: Path | None = Field(
        None, description="YAML of counsellors loaded (upserted) at start-up, e.g. deploy/counsellors.yaml"
    )

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if self.environment == "prod" and self.staff_api_key:
            raise ValueError(
                "STAFF_API_KEY (one key for every office) is for development; "
                "create per-office keys with consultctl scheduler staff-key create"
            )
        if not self.replica_id:
            self.replica_id = f"{socket.gethostname()}:{self.http_port}"
        return self
