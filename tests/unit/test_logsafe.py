"""R12: personal data and secrets never reach a log line (shared/logsafe.py)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from uvicorn.logging import AccessFormatter

from shared import logsafe
from shared.events import Recipient

PERSON = {
    "name": "山田 太郎",
    "name_kana": "ヤマダ タロウ",
    "address": "北海道釧路市幸町10-3",
    "email": "taro.yamada+kg@example.ne.jp",
    "phone": "090-1234-5678",
    "jobseeker_number": "13100-12345678",
    "topic": "離職後の生活について",
}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after each test."""
    root = logging.getLogger()
    saved_factory = logging.getLogRecordFactory()
    saved = {
        n: (list(logging.getLogger(n).handlers), list(logging.getLogger(n).filters)) for n in logsafe.LOGGERS
    }
    # servers started in-process by earlier tests (uvicorn) leave levels and disabled flags behind
    states = {n: (logging.getLogger(n).level, logging.getLogger(n).disabled) for n in logsafe.LOGGERS}
    for n in logsafe.LOGGERS:
        logging.getLogger(n).setLevel(logging.NOTSET)
        logging.getLogger(n).disabled = False
    level = root.level
    yield
    logging.setLogRecordFactory(saved_factory)
    for n, (handlers, filters) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:], lg.filters[:] = handlers, filters
        lg.setLevel(states[n][0])
        lg.disabled = states[n][1]
    root.setLevel(level)


@pytest.fixture
def output(restore_logging: None) -> io.StringIO:
    stream = io.StringIO()
    logsafe.configure_logging("booking", "DEBUG", stream=stream)
    return stream


def _leaks(text: str) -> list[str]:
    return [v for v in (*PERSON.values(), "taro.yamada", "1234-5678", "s3cret") if v in text]


def test_r12_email_addresses_are_redacted() -> None:
    out = logsafe.redact_text("mail to taro.yamada+kg@example.ne.jp failed; cc a_b@mail.city.kushiro.lg.jp")
    assert out == "mail to [email] failed; cc [email]"


@pytest.mark.parametrize(
    "phone",
    [
        "090-1234-5678",
        "09012345678",
        "03-1234-5678",
        "0154-23-5151",
        "(0154)23-5151",
        "+81-90-1234-5678",
        "+81 3 1234 5678",
        "０９０－１２３４－５６７８",
        "0120-123-456",
    ],
)
def test_r12_japanese_phone_numbers_are_redacted(phone: str) -> None:
    assert logsafe.redact_text(f"call {phone} today") == "call [phone] today"


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-06 09:30:00+09:00",
        "booking 0b7c4f1e-9d2a-4c1b-8e3f-0123456789ab",
        "amqp port 5672, latency 0.0123 s",
        "retry 3 of 5 in 30s",
        "office kohoku-hellowork slot 0930-1000",
    ],
)
def test_ordinary_values_are_left_alone(text: str) -> None:
    assert logsafe.redact_text(text) == text


def test_r12_jobseeker_numbers_are_redacted() -> None:
    assert (
        logsafe.redact_text("求職番号 13100-12345678 と 1310012345678")
        == "求職番号 [jobseeker-no] と [jobseeker-no]"
    )


def test_secrets_in_urls_and_headers_are_masked() -> None:
    text = logsafe.redact_text(
        "amqp://booking:s3cret@rabbitmq:5672/ mongodb://audit:p%40ss@mongo:27017/?authSource=admin "
        "smtps://relay:s3cret@smtp.example.jp:465 Authorization: Bearer eyJhbGciOi.abc.def"
    )
    assert text == (
        "amqp://booking:***@rabbitmq:5672/ mongodb://audit:***@mongo:27017/?authSource=admin "
        "smtps://relay:***@smtp.example.jp:465 Authorization: Bearer ***"
    )
    assert (
        logsafe.redact_text("SECRET_KEY=s3cret password: 's3cret'")
        == "SECRET_KEY=[redacted] password: '[redacted]'"
    )


def test_r12_values_under_personal_keys_are_redacted_in_structures() -> None:
    data = {"booking_id": "b1", "office_id": "kushiro-gyosei", "person": dict(PERSON), "windows": [PERSON]}
    out = logsafe.redact(data)
    assert out["booking_id"] == "b1" and out["office_id"] == "kushiro-gyosei"
    assert set(out["person"].values()) == {logsafe.REDACTED}
    assert _leaks(repr(out)) == []


def test_r12_personal_keys_in_text_reprs_are_redacted() -> None:
    text = logsafe.redact_text(
        """Recipient(name='山田 太郎', email='x@y.jp') {"name": "山田 太郎", "count": 2}"""
    )
    assert text == """Recipient(name='[redacted]', email='[redacted]') {"name": "[redacted]", "count": 2}"""
    assert logsafe.redact_text("service_name=booking queue_name=booking.inbox") == (
        "service_name=booking queue_name=booking.inbox"
    )


def test_r12_log_calls_with_args_models_extras_and_exceptions_leave_no_pii(output: io.StringIO) -> None:
    log = logging.getLogger("consult.booking.test")
    log.info("new booking %s from %s", PERSON, PERSON["email"])
    log.info("by mapping %(name)s at %(phone)s", PERSON)
    log.info("recipient %s", Recipient(name=PERSON["name"], email=PERSON["email"]))
    log.info(f"inline f-string {PERSON['phone']} {PERSON['email']}")
    log.warning("with extras", extra={"email": PERSON["email"], "detail": f"phone {PERSON['phone']}"})
    try:
        raise ValueError(f"invalid input {PERSON}")
    except ValueError:
        log.exception("handler failed for %s", PERSON["jobseeker_number"])
    text = output.getvalue()
    assert text.count("booking consult.booking.test:") == 6
    assert _leaks(text) == [], text
    assert "ValueError: invalid input" in text and "[redacted]" in text


def test_r12_extras_are_redacted_for_structured_handlers(restore_logging: None) -> None:
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger = logging.getLogger("faststream")
    keep = Keep()
    logger.addHandler(keep)  # a handler that was there before configure_logging ran
    logsafe.configure_logging("notifier", "INFO", stream=io.StringIO())
    logger.warning("sent", extra={"recipient_email": PERSON["email"], "note": f"to {PERSON['email']}"})
    record = seen[-1]
    assert record.recipient_email == logsafe.REDACTED  # type: ignore[attr-defined]
    assert record.note == "to [email]"  # type: ignore[attr-defined]


def test_r12_uvicorn_access_lines_keep_their_format_without_pii(restore_logging: None) -> None:
    stream = io.StringIO()
    access = logging.getLogger("uvicorn.access")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False)
    )
    access.addHandler(handler)
    try:
        logsafe.configure_logging("booking", "INFO", stream=io.StringIO())
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:50000",
            "GET",
            "/v1/people?email=taro.yamada%40example.ne.jp&phone=09012345678",
            "1.1",
            200,
        )
    finally:
        access.removeHandler(handler)
    line = stream.getvalue().strip()
    assert line == '127.0.0.1:50000 - "GET /v1/people?email=[redacted]&phone=[redacted] HTTP/1.1" 200 OK'


def test_configure_logging_is_idempotent_and_covers_uvicorn_and_faststream(restore_logging: None) -> None:
    first = logsafe.configure_logging("audit", "INFO", stream=io.StringIO())
    second = logsafe.configure_logging("audit", "WARNING", stream=io.StringIO())
    root = logging.getLogger()
    assert first is second and root.handlers.count(first) == 1
    assert root.level == logging.WARNING
    for name in logsafe.LOGGERS:
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, logsafe.RedactingFilter)]
        assert len(filters) == 1, name
    assert sum(isinstance(f, logsafe.RedactingFilter) for f in first.filters) == 1


def test_uvicorn_colour_templates_still_get_their_arguments(restore_logging: None) -> None:
    from uvicorn.logging import DefaultFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s", use_colors=True))
    error = logging.getLogger("uvicorn.error")
    error.addHandler(handler)
    try:
        logsafe.configure_logging("booking", "INFO", stream=io.StringIO())
        template = "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)"
        error.info(template, "http", "127.0.0.1", 8001, extra={"color_message": template})
    finally:
        error.removeHandler(handler)
    assert "http://127.0.0.1:8001" in stream.getvalue()
