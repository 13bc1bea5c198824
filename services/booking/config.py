"""Booking service settings."""

from __future__ import annotations

from pydantic import Field, model_validator

from services.booking.crypto import Vault
from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "booking"
    http_port: int = 8001
    pii_keys: dict[str, str] = Field(
        default_factory=dict,
        description="R12: field-encryption keys, id -> base64 of 32 bytes (PII_KEYS as JSON); "
        "empty outside prod: one key derived from SECRET_KEY",
    )
    pii_key_id: str = Field("", description="id of the key new values are sealed with (default: last id)")
    dev_portal_key: str | None = Field(
        None, description="development only: a portal key registered at start-up for portal dev-portal"
    )
    dev_staff_key: str | None = Field(
        None, description="development only: a staff key registered at start-up for every office"
    )
    idempotency_wait_seconds: float = Field(
        10.0, description="how long a repeated request waits for the first one's answer"
    )
    claim_stale_seconds: float = Field(
        30.0, description="a request claimed this long ago without an answer is taken over (crash)"
    )
    terms_notice_every_seconds: float = Field(
        3600.0, gt=0, description="R17: how often announced terms changes are looked for and people told"
    )

    list_days_back: int = Field(
        31, ge=0, description="a staff list without `from` starts this many days before today (office policy)"
    )
    list_max_days: int = Field(
        400, ge=1, description="the most days one staff list covers (it reads one bucket per day)"
    )

    # issue 8: hardened intake (services/booking/signing.py, ratelimit.py)
    require_signed_requests: bool = Field(
        False, description="every portal must sign intake requests (else only keys flagged `signed`)"
    )
    signature_window_seconds: int = Field(300, ge=1, description="accepted clock skew; replays within")
    rate_limit_portal: int = Field(600, ge=0, description="intake requests per portal key per window; 0 off")
    rate_limit_portal_window_seconds: int = Field(60, ge=1)
    rate_limit_person: int = Field(60, ge=0, description="intake requests per person per window; 0 off")
    rate_limit_person_window_seconds: int = Field(3600, ge=1)
    # issue 14: an AMQP command's portal is the broker user that sent it, `<prefix><portal id>`
    broker_portal_prefix: str = Field(
        "portal.",
        min_length=1,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="broker users `<prefix><portal id>` are portals (deploy/rabbitmq_users.py makes them)",
    )

    @model_validator(mode="after")
    def _no_dev_keys_in_prod(self) -> Settings:
        if self.environment == "prod" and (self.dev_portal_key or self.dev_staff_key):
            raise ValueError(
                "DEV_PORTAL_KEY / DEV_STAFF_KEY are for development; create keys with consultctl"
            )
        if self.environment == "prod" and not self.pii_keys:
            raise ValueError("PII_KEYS is required in prod (R12 field encryption)")
        return self

    def vault(self) -> Vault:
        return Vault.from_secret(self.secret_key, self.pii_keys, self.pii_key_id)
