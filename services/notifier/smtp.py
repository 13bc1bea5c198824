"""SMTP delivery through aiosmtplib, with every failure sorted into transient (retry) or permanent (park).

Permanent means the message itself cannot be delivered as it stands: the server answered 5xx for the
sender, the recipient or the data. Everything else is transient: no connection, timeouts, 4xx, and
also a rejected login or a missing STARTTLS, because those are the server's or our configuration's
fault, and the same message goes through once ops fix it (within the retry window, or by a replay).

A transient failure is *ambiguous* when the message body had gone out and no answer came back (the
connection dropped or timed out waiting for the reply to the data): the server may have accepted it,
so the next attempt is an ambiguous resend, counted as such.

The server's acceptance (the `250` after the data) is handed to the caller's `on_accepted` before
QUIT, so the caller records it durably at once; QUIT and closing the connection come after.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib

from services.notifier.config import Settings, SmtpTarget
from shared.logsafe import redact_text


class SmtpFailure(Exception):
    def __init__(
        self, detail: str, *, permanent: bool, code: int | None = None, ambiguous: bool = False
    ) -> None:
        # R12: servers echo the address in their replies; this text goes to logs, ops and audit.
        super().__init__(redact_text(detail))
        self.permanent = permanent
        self.code = code
        self.ambiguous = ambiguous  # the body went out unanswered: the server may have accepted it


@dataclass(frozen=True)
class Accepted:
    response: str
    seconds: float  # connect to the server's acceptance


OnAccepted = Callable[[Accepted], Awaitable[None]]


class _Session(aiosmtplib.SMTP):
    """An SMTP connection that knows whether the message body has gone out."""

    body_sent = False

    async def data(self, message: str | bytes, *args: Any, **kwargs: Any) -> aiosmtplib.SMTPResponse:
        self.body_sent = True
        return await super().data(message, *args, **kwargs)


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.target: SmtpTarget = settings.smtp
        self.settings = settings
        self.tls_context = _tls_context(settings) if self._uses_tls else None

    @property
    def _uses_tls(self) -> bool:
        return self.target.implicit_tls or self.settings.smtp_starttls is not False

    async def send(self, message: EmailMessage, on_accepted: OnAccepted | None = None) -> Accepted:
        """Send one message; `on_accepted` runs right after the server's acceptance, before QUIT.

        An error raised by `on_accepted` propagates as it is: the message was accepted all the same."""
        started = time.perf_counter()
        t, s = self.target, self.settings
        session = _Session(
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
        try:
            await session.connect()
        except Exception as exc:
            raise _failure(exc, ambiguous=False) from exc
        async with session:  # QUIT (errors ignored) and close on the way out
            try:
                _, response = await session.send_message(message)
            except Exception as exc:
                session.close()  # no QUIT on a connection that failed
                raise _failure(exc, ambiguous=session.body_sent) from exc
            accepted = Accepted(response=response, seconds=time.perf_counter() - started)
            if on_accepted is not None:
                await on_accepted(accepted)
        return accepted


def _failure(exc: Exception, *, ambiguous: bool) -> Exception:
    """Sort an aiosmtplib error into an SmtpFailure; anything else (a bug) is returned unchanged."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        return SmtpFailure(
            f"recipient refused: {'; '.join(f'{r.code} {r.message}' for r in exc.recipients)}",
            permanent=all(c >= 500 for c in codes),
            code=max(codes, default=None),
        )
    if isinstance(
        exc,
        aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPConnectResponseError | aiosmtplib.SMTPHeloError,
    ):  # the server or our configuration, not this message
        return SmtpFailure(f"{type(exc).__name__}: {exc.code} {exc.message}", permanent=False, code=exc.code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):  # an answer, so never ambiguous
        return SmtpFailure(
            f"{type(exc).__name__}: {exc.code} {exc.message}", permanent=exc.code >= 500, code=exc.code
        )
    if isinstance(exc, aiosmtplib.SMTPException | OSError | ssl.SSLError | TimeoutError):
        return SmtpFailure(f"{type(exc).__name__}: {exc}", permanent=False, ambiguous=ambiguous)
    return exc


def _tls_context(settings: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(settings.smtp_ca_file) if settings.smtp_ca_file else None)
    if not settings.smtp_validate_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
