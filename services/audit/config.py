"""Audit service settings. Field names start with `audit_` so the shared environment of the stack
cannot hand another service's setting to this one by accident."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.settings import ServiceSettings

#: R10 leaves the keeping period to the office: its policy's `record_retention` (deploy/offices/*.yaml)
#: decides, AUDIT_RETENTION_DAYS_BY_OFFICE overrides it, and streams without an office (the audit
#: service's own acts, anonymous access) keep this default: 5 years (1,825 days), the period Japanese
#: administrative offices commonly apply to such records (行政文書の保存期間 5年), as the policies do.
DEFAULT_RETENTION_DAYS = 1825


class Settings(ServiceSettings):
    service_name: str = "audit"
    http_port: int = 8004
    # More messages in flight than the other services: the handler waits for its batch's write, so
    # the prefetch bounds how large a group commit can grow.
    prefetch: int = Field(256, description="unacknowledged messages in flight (bounds a batch)")

    audit_pseudonym_key: str = Field(
        "",
        description="HMAC key of device, IP, email pseudonyms (R11, R12); derived from SECRET_KEY if empty",
    )
    audit_chain_key: str = Field(
        "", description="HMAC key of the record hash chain; derived from SECRET_KEY if empty"
    )
    audit_seal_keys: dict[str, str] = Field(
        default_factory=dict,
        description="AES-GCM keys for sealed raw device values, key id -> base64 (16/24/32 bytes), JSON",
    )
    audit_seal_key_id: str = Field("", description="key id that seals new values; old ids still open")
    audit_bootstrap_auditor_key: str = Field(
        "", description="dev/test only: an auditor API key `<key id>.<secret>` created at start-up"
    )
    audit_bootstrap_approver_key: str = Field(
        "", description="dev/test only: a disclosure-approver API key created at start-up"
    )
    audit_retention_days: int = Field(
        DEFAULT_RETENTION_DAYS, ge=1, description="keeping period of streams without an office policy"
    )
    audit_retention_days_by_office: dict[str, int] = Field(
        default_factory=dict, description="override of the office policy's record_retention, JSON"
    )
    audit_purge_interval_seconds: float = Field(6 * 3600, description="retention job period; 0 disables")
    audit_stats_min_cell: int = Field(5, ge=1, description="statistics cells below this are suppressed (R11)")
    audit_batch_max: int = Field(256, ge=1, description="records per chain append")
    audit_batch_linger_seconds: float = Field(0.002, ge=0, description="wait for more records to batch")
    audit_page_max: int = Field(1000, ge=1, description="largest page of a search")
    audit_view_max_days: int = Field(
        366,
        ge=1,
        description="an office's search, export or statistics over at most this many JST days reads the "
        "day view (one bucket a day); longer or open periods read the whole store",
    )
    audit_disclosure_valid_days: int = Field(30, ge=1, description="an approval is usable this long")
    audit_disclosure_max_records: int = Field(10_000, ge=1, description="records one disclosure may open")

    @model_validator(mode="after")
    def _no_bootstrap_keys_in_prod(self) -> Settings:
        if self.environment == "prod" and (
            self.audit_bootstrap_auditor_key or self.audit_bootstrap_approver_key
        ):
            raise ValueError(
                "bootstrap audit keys are for dev and test; create keys with `consultctl audit create-key`"
            )
        return self
