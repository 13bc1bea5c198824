"""SMTP settings: the URL forms, and what is refused before the service starts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.notifier.config import Settings, SmtpTarget


def test_smtp_url_with_login_and_port() -> None:
    t = SmtpTarget.parse("smtp://notifier:p%40ss@mail.example.org:587")
    assert (t.host, t.port, t.implicit_tls) == ("mail.example.org", 587, False)
    assert (t.username, t.password) == ("notifier", "p@ss")
    assert str(t) == "smtp://notifier@mail.example.org:587"  # never the password


def test_smtps_defaults_to_implicit_tls_on_465() -> None:
    t = SmtpTarget.parse("smtps://mail.example.org")
    assert (t.port, t.implicit_tls, t.username) == (465, True, None)


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(smtp_url="http://mail.example.org")


def test_prod_refuses_a_login_over_plaintext() -> None:
    prod: dict[str, Any] = {
        "environment": "prod",
        "secret_key": "a-real-secret",
        "amqp_url": "amqp://n:x@mq/",
    }
    with pytest.raises(ValidationError, match="SMTP credentials"):
        Settings(**prod, smtp_url="smtp://u:p@mail.example.org:587")
    Settings(**prod, smtp_url="smtp://u:p@mail.example.org:587", smtp_starttls=True)
    Settings(**prod, smtp_url="smtps://u:p@mail.example.org")


def test_the_lease_must_outlast_a_slow_send() -> None:
    with pytest.raises(ValidationError, match="DELIVERY_LEASE_SECONDS"):
        Settings(smtp_timeout=30, delivery_lease_seconds=60)
