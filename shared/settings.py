"""Settings: one pydantic-settings base, a subclass per service. Nothing else reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, IPvAnyNetwork, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.client_ip import ClientIp, ProxyHeader
from shared.clock import Clock, OffsetClock, SystemClock
from shared.policy import Policies, load_policies

ROOT = Path(__file__).resolve().parent.parent

#: Values that are fine on a developer's laptop and must never reach production.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "dev", "dev-secret", "secret", "password"})


class ServiceSettings(BaseSettings):
    """What every service needs: where the broker, the database and the mail server are."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["dev", "test", "prod"] = Field("dev", description="dev, test or prod")
    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", description="RabbitMQ URL")
    mongodb_url: str = Field(
        "mongodb://127.0.0.1:27017/", description="MongoDB URL (local FerretDB by default)"
    )
    smtp_url: str = Field("smtp://127.0.0.1:1025", description="SMTP server URL")
    db_prefix: str = Field("", description="prefix for database names; tests isolate runs with it")
    offices_dir: Path = Field(ROOT / "deploy" / "offices", description="office policy files")
    extra_offices_dir: Path | None = Field(
        None, description="more policies, e.g. deploy/offices-demo (short no-show grace) for demo and tests"
    )
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    log_level: str = "INFO"
    prefetch: int = Field(32, description="unacknowledged messages per consumer")
    outbox_poll_seconds: float = Field(
        5.0, description="outbox relay safety-net scan interval; writes wake the relay at once"
    )
    secret_key: str = Field(
        "dev-secret",
        description="key for keyed hashes and field encryption; a placeholder is refused in prod",
    )

    max_body_bytes: int = Field(
        256 * 1024, ge=1, description="largest request body accepted (413 beyond; shared/limits.py)"
    )

    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="R10: the office's own reverse proxies, as CIDRs or addresses (JSON list); only a "
        "request from one of them has its proxy header believed. None: the socket peer is the client",
    )
    trusted_proxy_header: ProxyHeader = Field(
        "x-forwarded-for",
        description="the header the trusted proxies write the client into: x-forwarded-for or forwarded "
        "(RFC 7239); the other one is ignored",
    )

    clock_offset_file: Path | None = Field(
        None,
        description="tests only: the services' clock is the system clock moved by the seconds in this file",
    )

    service_name: str = "service"

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> ServiceSettings:
        if self.environment == "prod" and self.secret_key in PLACEHOLDER_SECRETS:
            raise ValueError("SECRET_KEY is a placeholder; set a real secret outside development")
        if self.environment == "prod" and "guest:guest@" in self.amqp_url:
            raise ValueError("AMQP_URL uses the guest account; give the service its own user in prod")
        if self.clock_offset_file is not None and self.environment != "test":
            raise ValueError("CLOCK_OFFSET_FILE moves the clock; it is for ENVIRONMENT=test only")
        return self

    def clock(self) -> Clock:
        """The system clock, or in tests the one moved by CLOCK_OFFSET_FILE."""
        return OffsetClock(self.clock_offset_file) if self.clock_offset_file else SystemClock()

    def client_ip(self) -> ClientIp:
        """R10: how the access log finds the client's address behind the trusted proxies."""
        return ClientIp(tuple(self.trusted_proxies), self.trusted_proxy_header)

    def policies(self) -> Policies:
        """Every office's validated policy (loaded once per set of directories)."""
        extra = (self.extra_offices_dir,) if self.extra_offices_dir else ()
        policies = load_policies(self.offices_dir, extra)
        if self.environment == "prod":
            examples = {office: policies[office].example_details() for office in policies.ids()}
            if named := {office: found for office, found in examples.items() if found}:
                raise ValueError(
                    "office policies hold examples, not the offices' published details; set them "
                    f"before running with ENVIRONMENT=prod: {named}"
                )
        return policies

    def database(self, name: str) -> str:
        """The database name for this service, isolated by prefix in tests."""
        return f"{self.db_prefix}{name}"

    @property
    def vhost(self) -> str:
        """The broker's virtual host in AMQP_URL (`/` when it names none), for the management API."""
        path = urlsplit(self.amqp_url).path.lstrip("/")
        return unquote(path) if path else "/"
