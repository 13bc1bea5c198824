"""Personal data and secrets out of the logs (R12: protected as at the counter).

Whatever a log call passes — a message with an address in it, a dict of form fields, a pydantic
model, an exception whose text echoes input, `extra=` fields — leaves the process redacted:

- values under personal or secret keys (name, name_kana, address, email, phone, jobseeker_number,
  topic, password, secret, token, ...) become `[redacted]`, in dicts, models, lists and in
  `key=value` / `"key": "value"` text;
- email addresses become `[email]`, Japanese phone numbers `[phone]` (0X-XXXX-XXXX, +81, full-width
  digits), job-seeker numbers (12345-12345678 or 13 digits) `[jobseeker-no]`;
- passwords in URLs become `***` (amqp://booking:***@rabbitmq:5672/), bearer tokens too.

`configure_logging(service, level)` installs this once per process: a record factory (every
logger, whatever handlers uvicorn or a test adds later) plus a filter on the root, uvicorn and
FastStream handlers (for `extra=` fields, which are set after the factory runs).
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

from pydantic import BaseModel

REDACTED = "[redacted]"
#: loggers whose formatters use `record.args` themselves (uvicorn's access line, its colour_message
#: templates): their args are redacted one by one instead of being merged into the message
KEEP_ARGS = frozenset({"uvicorn", "uvicorn.error", "uvicorn.access"})
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "faststream", "faststream.access.rabbit")

_DONE = "_logsafe_done"
_OURS = "_logsafe_handler"
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}

# A key whose value is personal or secret. Names only as whole keys (service_name is not personal).
_KEY_WORDS = (
    r"name|full_?name|person_name|recipient_name|name_kana|kana|furigana|topic|tel|pwd"
    r"|job_?seeker_(?:number|no)|birth\w*|date_of_birth|device_id|user_agent"
    r"|\w*(?:email|e_mail|phone|address|password|passwd|secret|token|api_?key|authorization|cookie|credential)\w*"
)
_SENSITIVE_KEY = re.compile(rf"^(?:{_KEY_WORDS})$", re.IGNORECASE)
_KV = re.compile(
    rf"""(?P<key>(?<![\w.-])["']?(?:{_KEY_WORDS})["']?)(?P<sep>\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&)}\]]+)""",
    re.IGNORECASE,
)
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@", re.IGNORECASE)
_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_JOBSEEKER = re.compile(r"(?<![\w.-])\d{5}[-‐－]?\d{8}(?![\w.-])")
_PHONE = re.compile(r"(?<![\w.+-])(?:\+81|[(（]?[0０])[\d\s()（）\-‐－−ー]{7,16}\d(?![\w.-])")
_NOT_DIGIT = re.compile(r"\D")
_formatter = logging.Formatter()


def sensitive_key(key: str) -> bool:
    return _SENSITIVE_KEY.match(key.strip().replace("-", "_")) is not None


def _kv(m: re.Match[str]) -> str:
    value = m["value"]
    if value.lower() in ("bearer", "basic", "token"):  # already masked by _BEARER
        return m[0]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{m['key']}{m['sep']}{quote}{REDACTED}{quote}"


def _phone(m: re.Match[str]) -> str:
    digits = _NOT_DIGIT.sub("", m[0])
    # +81 and 9 or 10 digits; or 0, the area or mobile prefix and the subscriber number (10 or 11)
    ok = 11 <= len(digits) <= 12 if digits.startswith("81") else 10 <= len(digits) <= 11
    return "[phone]" if ok else m[0]


def redact_text(text: str) -> str:
    """Redact secrets and personal data in free text."""
    text = _URL_CREDENTIALS.sub(r"\g<head>:***@", text)
    text = _BEARER.sub(r"\g<kind> ***", text)
    text = _KV.sub(_kv, text)
    text = _EMAIL.sub("[email]", text)
    text = _JOBSEEKER.sub("[jobseeker-no]", text)
    return _PHONE.sub(_phone, text)


def redact(value: Any, _depth: int = 0) -> Any:
    """Redact a structured value: sensitive keys wholesale, everything textual by pattern."""
    if value is None or isinstance(value, bool | numbers.Number):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if _depth > 8:
        return redact_text(str(value))
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and sensitive_key(k) else redact(v, _depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact(v, _depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return redact_text(str(value))


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a record in place: message and arguments, exception text, then `extra=` fields."""
    if not getattr(record, _DONE, False):
        _redact_message(record)
        setattr(record, _DONE, True)
    for key, value in list(vars(record).items()):
        if key in _STANDARD or key.startswith("_"):
            continue
        if sensitive_key(key):
            setattr(record, key, REDACTED)
        elif isinstance(value, str):
            setattr(record, key, redact_text(value))
    return record


def _redact_message(record: logging.LogRecord) -> None:
    if record.name in KEEP_ARGS and isinstance(record.args, tuple):
        record.args = tuple(redact(a) for a in record.args)
    else:
        args = redact(record.args) if record.args else None
        msg = record.msg if isinstance(record.msg, str) else str(redact(record.msg))
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError, KeyError):
            text = f"{msg} {args!r}"
        record.msg, record.args = redact_text(text), None
    if record.exc_info and not record.exc_text:
        record.exc_text = _formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


class RedactingFilter(logging.Filter):
    """Put on a handler (or in a dictConfig): every record it passes on is redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


class _RedactingFactory:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.inner(*args, **kwargs)
        _redact_message(record)
        setattr(record, _DONE, True)
        return record


def _add_filter(target: logging.Filterer) -> None:
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())


def configure_logging(
    service: str, level: str | int = "INFO", *, stream: IO[str] | None = None
) -> logging.Handler:
    """Log to stderr as `<time> <LEVEL> <service> <logger>: <message>`, with R12 redaction everywhere.

    Idempotent; call it once the server has set up its own logging (e.g. from the app's lifespan),
    so the handlers uvicorn installed get the filter too.
    """
    root = logging.getLogger()
    root.setLevel(level.upper() if isinstance(level, str) else level)
    handler = next((h for h in root.handlers if getattr(h, _OURS, False)), None)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    elif stream is not None and isinstance(handler, logging.StreamHandler):
        handler.setStream(stream)  # a caller asking for a stream gets it, even on a second call
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(factory))
    for name in LOGGERS:
        logger = logging.getLogger(name)
        _add_filter(logger)
        for h in logger.handlers:
            _add_filter(h)
    return handler
