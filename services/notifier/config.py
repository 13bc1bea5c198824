"""Notifier service settings: where mail goes out, from whom, and how long a send may hold its claim."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, model_validator

from shared.settings import ServiceSettings


@dataclass(frozen=True)
class SmtpTarget:
    """SMTP_URL taken apart: smtp://user:pass@host:587 (plain or STARTTLS), smtps://host:465 (TLS)."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        u = urlsplit(url)
        if u.scheme not in ("smtp", "smtps"):
            raise ValueError(f"SMTP_URL must start with smtp:// or smtps://, not {u.scheme}://")
        tls = u.scheme == "smtps"
        return cls(
            host=u.hostname or "127.0.0.1",
            port=u.port or (465 if tls else 25),
            implicit_tls=tls,
            username=unquote(u.username) if u.username else None,
            password=unquote(u.password) if u.password else None,
        )

    def __str__(self) -> str:  # never the password in logs
        who = f"{self.username}@" if self.username else ""
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{who}{self.host}:{self.port}"


class Settings(ServiceSettings):
    service_name: str = "notifier"
    http_port: int = 8003
    smtp_starttls: bool | None = Field(
        None,
        description="smtp:// only. true: require STARTTLS; false: never; unset: upgrade when offered",
    )
    smtp_validate_certs: bool = Field(True, description="verify the SMTP server's certificate")
    smtp_ca_file: Path | None = Field(None, description="CA bundle for a private SMTP certificate")
    smtp_timeout: float = Field(10.0, gt=0, description="seconds for each SMTP step before giving up")
    mail_from: str = Field(
        "no-reply@consult.example.org", description="envelope sender and From address; the office is its name"
    )
    delivery_lease_seconds: float = Field(
        120.0,
        gt=0,
        description="a claimed delivery not marked within this time is retried (same Message-ID)",
    )

    agenda_poll_seconds: float = Field(
        60.0,
        gt=0,
        description="how often the counsellors' agenda job looks whether an office's agenda is due",
    )

    @property
    def smtp(self) -> SmtpTarget:
        return SmtpTarget.parse(self.smtp_url)

    @property
    def mail_domain(self) -> str:
        return self.mail_from.rpartition("@")[2]

    @model_validator(mode="after")
    def _safe_smtp(self) -> Settings:
        target = self.smtp  # refuses an unknown scheme early
        if "@" not in self.mail_from:
            raise ValueError("MAIL_FROM must be an address")
        # A send runs connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, each bounded by the timeout;
        # the lease must outlast that, or a slow send would be taken over and sent twice.
        if self.delivery_lease_seconds < self.smtp_timeout * 8:
            raise ValueError("DELIVERY_LEASE_SECONDS must be at least 8 x SMTP_TIMEOUT")
        plaintext_login = target.username and not target.implicit_tls and self.smtp_starttls is not True
        if self.environment == "prod" and plaintext_login:
            raise ValueError("SMTP credentials need smtps:// or SMTP_STARTTLS=true outside development")
        return self
