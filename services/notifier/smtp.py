"""SMTP delivery through aiosmtplib, with every failure sorted into transient (retry) or permanent (park).

Permanent means the message itself cannot be delivered as it stands: the server answered 5xx for the
sender, the recipient or the data. Everything else is transient: no connection, timeouts, 4xx, and
also a rejected login or a missing STARTTLS, because those are the server's or our configuration's
fault, and the same message goes through once ops fix it (within the retry window, or by a replay).
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from services.notifier.config import Settings, SmtpTarget
from shared.logsafe import redact_text


class SmtpFailure(Exception):
    def __init__(self, detail: str, *, permanent: bool, code: int | None = None) -> None:
        # R12: servers echo the address in their replies; this text goes to logs, ops and audit.
        super().__init__(redact_text(detail))
        self.permanent = permanent
        self.code = code


@dataclass(frozen=True)
class Accepted:
    response: str
    seconds: float


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.target: SmtpTarget = settings.smtp
        self.settings = settings
        self.tls_context = _tls_context(settings) if self._uses_tls else None

    @property
    def _uses_tls(self) -> bool:
        return self.target.implicit_tls or self.settings.smtp_starttls is not False

    async def send(self, message: EmailMessage) -> Accepted:
        started = time.perf_counter()
        t, s = self.target, self.settings
        try:
            _, response = await aiosmtplib.send(
                message,
                hostname=t.host,
                port=t.port,
                username=t.username,
                password=t.password,
                use_tls=t.implicit_tls,
                start_tls=None if t.implicit_tls else s.smtp_starttls,
                tls_context=self.tls_context,
                timeout=s.smtp_timeout,
                local_hostname=s.mail_domain,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise SmtpFailure(
                f"recipient refused: {'; '.join(f'{r.code} {r.message}' for r in exc.recipients)}",
                permanent=all(c >= 500 for c in codes),
                code=max(codes, default=None),
            ) from exc
        except (
            aiosmtplib.SMTPAuthenticationError,
            aiosmtplib.SMTPConnectResponseError,
            aiosmtplib.SMTPHeloError,
        ) as exc:  # the server or our configuration, not this message
            raise SmtpFailure(
                f"{type(exc).__name__}: {exc.code} {exc.message}", permanent=False, code=exc.code
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise SmtpFailure(
                f"{type(exc).__name__}: {exc.code} {exc.message}", permanent=exc.code >= 500, code=exc.code
            ) from exc
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            raise SmtpFailure(f"{type(exc).__name__}: {exc}", permanent=False) from exc
        return Accepted(response=response, seconds=time.perf_counter() - started)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None)
    if not settings.smtp_validate_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
