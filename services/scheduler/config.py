"""Scheduler service settings."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

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
    graph_credentials: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="R16 Teams through Microsoft Graph: office id -> the app registration's client secret "
        '(JSON, e.g. GRAPH_CREDENTIALS=\'{"kushiro-gyosei": "..."}\'); never logged',
    )
    graph_certificates: dict[str, Path] = Field(
        default_factory=dict,
        description="office id -> a PEM file with the app registration's certificate and private key "
        "(instead of a secret)",
    )
    graph_authority_host: str = Field(
        "https://login.microsoftonline.com", description="Microsoft identity platform (token endpoint)"
    )
    graph_base_url: str = Field("https://graph.microsoft.com/v1.0", description="Microsoft Graph")
    graph_ca_bundle: Path | None = Field(
        None, description="CA file to trust for the two above (the local Graph contract server in dev/test)"
    )
    meeting_dev_hosts: list[str] = Field(
        default_factory=list,
        description="dev/test only: join-URL hosts accepted for pre-issued rooms besides the apps' own "
        "(the local development room); refused in prod",
    )

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        if self.environment == "prod" and self.staff_api_key:
            raise ValueError(
                "STAFF_API_KEY (one key for every office) is for development; "
                "create per-office keys with consultctl scheduler staff-key create"
            )
        if self.environment == "prod" and self.meeting_dev_hosts:
            raise ValueError("MEETING_DEV_HOSTS (development rooms) is for development and tests")
        if not self.replica_id:
            self.replica_id = f"{socket.gethostname()}:{self.http_port}"
        return self
