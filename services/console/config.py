"""Console settings. Field names the other services also read (BOOKING_URL...) are the console's own:
no other service has a setting of that name.

Office policy where the issue leaves the numbers open: sessions end after 30 minutes without a request
(a desk left unattended) and 12 hours after sign-in (one working day); five failed sign-ins per
account and twenty per client address within 15 minutes lock further attempts until the window ends.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator

from shared.settings import ROOT, ServiceSettings

LOCAL = ROOT / ".local"


class Settings(ServiceSettings):
    service_name: str = "console"
    http_port: int = 8005

    booking_url: str = Field("http://127.0.0.1:8001", description="the booking service's HTTP API")
    scheduler_url: str = Field("http://127.0.0.1:8002", description="the scheduler service's HTTP API")
    audit_url: str = Field("http://127.0.0.1:8004", description="the audit service's HTTP API")
    notifier_url: str = Field("http://127.0.0.1:8003", description="the notifier's HTTP API (replay only)")
    rabbitmq_management_url: str = Field(
        "http://127.0.0.1:15672/api", description="operations page: the RabbitMQ management API"
    )
    #: the console's own `monitoring` user (deploy/rabbitmq_users.py `console-monitor`)
    rabbitmq_monitor_user: str = Field("console-monitor", description="the console's management API user")
    rabbitmq_monitor_password: SecretStr = Field(
        SecretStr(""),
        description="its password; unset: `make up`'s .local/secrets/rabbitmq-console-monitor.password",
    )
    rabbitmq_secrets_dir: Path = Field(
        LOCAL / "secrets", description="where `make up` keeps broker passwords"
    )
    ops_peek_max: int = Field(20, ge=1, le=200, description="parked messages shown when asked for reasons")
    #: the console's own credential in each service (`--console`: it acts for a named person)
    console_booking_key: SecretStr = Field(SecretStr(""), description="booking console key (or the file)")
    console_scheduler_key: SecretStr = Field(SecretStr(""), description="scheduler console key")
    console_audit_key: SecretStr = Field(SecretStr(""), description="audit console key")
    console_notifier_key: SecretStr = Field(SecretStr(""), description="notifier console key (operator)")
    console_key_dir: Path = Field(
        LOCAL, description="where `make up` keeps console-<service>-key.txt, read when a key is unset"
    )
    service_timeout_seconds: float = Field(10.0, gt=0, description="one call to a service")

    session_idle_minutes: int = Field(30, ge=1, description="a session unused this long ends")
    session_absolute_hours: int = Field(12, ge=1, description="a session ends this long after sign-in")
    signin_window_minutes: int = Field(15, ge=1, description="rate-limit window of failed sign-ins")
    signin_limit_account: int = Field(5, ge=1, description="failed sign-ins per account per window")
    signin_limit_client: int = Field(20, ge=1, description="failed sign-ins per client address per window")
    cookie_secure: bool | None = Field(
        None, description="Secure cookies; default: when the request came over https"
    )
    poll_seconds: int = Field(30, ge=5, description="how often the today page refreshes itself")
    node_modules: Path = Field(ROOT / "node_modules", description="npm packages (htmx) the console serves")

    @model_validator(mode="after")
    def _prod_needs_tls_cookies(self) -> Settings:
        if self.environment == "prod" and self.cookie_secure is False:
            raise ValueError("COOKIE_SECURE=false is for development; the console is served over TLS in prod")
        return self

    def monitor(self) -> tuple[str, str, str] | None:
        """The management API (without credentials) and the user and password the console reads it
        as: RABBITMQ_MONITOR_PASSWORD for RABBITMQ_MONITOR_USER, else credentials in the URL
        (development compose, the tests' vhosts), else `make up`'s password file of the user; None:
        none of them."""
        u = urlsplit(self.rabbitmq_management_url)
        api = urlunsplit(u._replace(netloc=u.netloc.rsplit("@", 1)[-1]))
        user, given = self.rabbitmq_monitor_user, self.rabbitmq_monitor_password.get_secret_value()
        if given:
            return api, user, given
        if u.username and u.password:
            return api, unquote(u.username), unquote(u.password)
        path = self.rabbitmq_secrets_dir / f"rabbitmq-{user}.password"
        return (api, user, path.read_text().strip()) if path.exists() else None

    def key(self, service: str) -> str:
        """The console's key for a service: from the setting, else from `make up`'s key file."""
        given = {
            "booking": self.console_booking_key,
            "scheduler": self.console_scheduler_key,
            "audit": self.console_audit_key,
            "notifier": self.console_notifier_key,
        }[service].get_secret_value()
        if given:
            return given
        path = self.console_key_dir / f"console-{service}-key.txt"
        return path.read_text().strip() if path.exists() else ""
