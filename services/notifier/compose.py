"""From a Notice to an RFC 5322 message: Jinja2 templates (text and HTML alternatives) and checked headers.

Templates live in `templates/`: `generic/<kind>.j2` for every kind, `<office_id>/<kind>.j2` where an
office words something its own way (they extend the generic one), `partials/` for what every email
carries, and `text/` + `html/` for the two flavours of layout and building blocks. One kind template
renders both alternatives: the loader finds `layout.j2` and `blocks.j2` in `text/` or `html/`. The HTML
environment autoescapes every value; the plain-text one cannot carry markup, so nothing there to escape.
A new office needs no template: the generic ones read everything from its policy.
"""

from __future__ import annotations

import email.policy
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from email_validator import EmailNotValidError, validate_email
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError

from services.notifier.domain import (
    Kind,
    Notice,
    app_label,
    check_header,
    check_meeting_url,
)
from services.notifier.invite import invitation
from shared.clock import WEEKDAYS_JA, format_jst, jst
from shared.events import Appointment, MessageError
from shared.policy import Channel, OfficePolicy
from shared.wording import cancel_guidance

TEMPLATES = Path(__file__).resolve().parent / "templates"

#: Strict: a header value with CR or LF raises instead of being folded into a second header.
STRICT = email.policy.SMTP.clone(raise_on_defect=True)


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


class Composer:
    """Renders notices with the office's templates and builds the message to hand to SMTP."""

    def __init__(self, mail_from: str, templates: Path = TEMPLATES) -> None:
        self.mail_from = mail_from
        common: dict[str, Any] = {"undefined": StrictUndefined, "trim_blocks": True, "lstrip_blocks": True}
        self.text_env = Environment(
            loader=FileSystemLoader([templates / "text", templates]), autoescape=False, **common
        )
        self.html_env = Environment(
            loader=FileSystemLoader([templates / "html", templates]), autoescape=True, **common
        )

    def render(self, notice: Notice, policy: OfficePolicy) -> Rendered:
        names = [f"{policy.office_id}/{notice.kind.value}.j2", f"generic/{notice.kind.value}.j2"]
        values = context(notice, policy)
        try:
            text = self.text_env.select_template(names).render(values)
            html = self.html_env.select_template(names).render(values)
        except TemplateError as exc:  # a broken template is parked with its reason, not retried blindly
            raise MessageError("template-error", f"{names[0]}: {exc}") from exc
        return Rendered(notice.subject, _tidy(text), html)

    def compose(
        self, notice: Notice, policy: OfficePolicy, *, message_id: str, now: datetime
    ) -> EmailMessage:
        """The message to send; refuses an invalid address or any header value with CR/LF."""
        rendered = self.render(notice, policy)
        msg = EmailMessage(policy=STRICT)
        try:
            msg["Subject"] = check_header("Subject", rendered.subject)
            msg["From"] = Address(check_header("From", policy.name), addr_spec=self.mail_from)
            msg["To"] = Address(check_header("To", notice.recipient.name), addr_spec=address(notice))
            if policy.email and Channel.EMAIL in policy.cancellation.channels:
                msg["Reply-To"] = Address(policy.name, addr_spec=policy.email)  # R07: cancel by email
            msg["Date"] = format_datetime(now)
            msg["Message-ID"] = check_header("Message-ID", message_id)
            msg["X-Consult-Delivery"] = check_header("X-Consult-Delivery", notice.key)
        except (ValueError, IndexError, HeaderParseError) as exc:  # the library's own refusal
            raise MessageError("invalid-header", str(exc)) from exc
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
        msg["Content-Language"] = "ja"
        msg.set_content(rendered.text, charset="utf-8")
        msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
        if notice.invite is not None:
            # The calendar entry as the last alternative of the body (RFC 6047 iMIP), not as an
            # `invite.ics` attachment: Outlook shows an invitation (and applies an update or a
            # cancellation to the entry already in the calendar) only for a text/calendar with its
            # method inside multipart/alternative; Gmail, Apple Mail and Thunderbird read it there too,
            # and a client that knows no calendars shows the HTML or the text instead. The same object
            # once more as an attachment makes some clients offer two invitations.
            ics = invitation(
                notice.invite,
                policy,
                organizer=self.mail_from,
                now=now,
                to_counsellor=notice.to_counsellor,
            )
            msg.add_alternative(
                ics,
                maintype="text",
                subtype="calendar",
                cte="base64",  # the bytes as built (CRLF line ends, UTF-8), untouched on the way
                params={"method": notice.invite.method, "charset": "UTF-8"},
            )
        return msg


def address(notice: Notice) -> str:
    """The recipient's address, syntax-checked; an invalid one is a permanent failure."""
    raw = check_header("To", notice.recipient.email)
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise MessageError("invalid-address", str(exc)) from exc


def context(notice: Notice, policy: OfficePolicy) -> dict[str, Any]:
    """Everything a template may use, already in the form a person reads (JST, Japanese labels)."""
    f = notice.facts
    until = f.get("until")
    hold = f.get("hold_expires_at")
    return {
        "subject": notice.subject,
        "kind": notice.kind.value,
        "person_name": notice.recipient.name,
        "office": {
            "name": policy.name,
            "service_name": policy.service_name,
            "phone": policy.phone,
            "email": policy.email,
            "address": policy.address,
        },
        "appointment": _appointment(notice.appointment),
        "cancel": cancel_guidance(policy),  # R07
        "grace": duration_ja(policy.no_show_grace),  # R08: 10分
        "lead_time_open_days": policy.lead_time_open_days,  # R04
        "refusal": {  # R09: the office's numbers
            "no_shows": policy.refusal.no_shows,
            "within_days": policy.refusal.within.days,
            "refuse_for_days": policy.refusal.refuse_for.days,
        },
        "notes": {  # R15, R14, R18
            "private_room": policy.private_room_note,
            "recording": policy.recording_note,
            "fee": policy.fee_note,
        },
        "checklist": [item.text for item in policy.device_checklist],  # R19
        "terms": {"label": _terms_label(policy, f.get("terms_version"))},  # R17
        "future": notice.kind in (Kind.CANCELLATION, Kind.NO_SHOW, Kind.REFUSAL),
        "reason": f.get("reason"),
        "rule": f.get("rule"),
        "refusal_reason": f.get("reason") or "",
        "until": f"{format_jst(until)}まで" if until else "解除されるまで",
        "alternatives": [
            (f"候補{i}（番号 {a.option_id}）", format_jst(a.start, a.end))
            for i, a in enumerate(f.get("alternatives", []), 1)
        ],
        "hold_expires": format_jst(hold) if hold else "",
        "terms_change": _terms_change(f),  # R17
        "default_app": app_label(policy.default_meeting.app),
        "previous": _appointment(notice.previous),  # a change: the time it replaces
        "person": f.get("person"),  # a counsellor's email: name, topic, HW job-seeker number (R12)
        "agenda_day": _day_ja(f["day"]) if f.get("day") else "",
        "agenda": [_agenda_entry(e) for e in f.get("entries", [])],
    }


def _day_ja(day: Any) -> str:
    """2026年12月4日(金)"""
    return f"{day.year}年{day.month}月{day.day}日({WEEKDAYS_JA[day.weekday()]})"


def _agenda_entry(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": f"{jst(e['start']):%H:%M}〜{jst(e['end']):%H:%M}",
        "app": app_label(e["app"]),
        "meeting_url": check_meeting_url(e["meeting_url"]),
        "meeting_id": e.get("meeting_id"),
        "passcode": e.get("passcode"),
        "person": e["person"],
    }


def _terms_change(f: dict[str, Any]) -> dict[str, Any] | None:
    day = f.get("effective_from")
    if not f.get("new_version") or day is None:
        return None
    return {
        "version": f["new_version"],
        "effective_from": f"{day.year}年{day.month}月{day.day}日",
        "change": f.get("change") or "",
        "url": f.get("url"),
    }


def _appointment(a: Appointment | None) -> dict[str, str | None] | None:
    if a is None:
        return None
    return {
        "when": format_jst(a.start, a.end),  # R06: e.g. 2026年11月25日(水) 10:00〜10:30
        "app": app_label(a.app),  # R16
        "meeting_url": check_meeting_url(a.meeting_url),
        "meeting_id": a.meeting_id,  # a pre-issued room: what to type in, where the app asks for it
        "passcode": a.passcode,
        "counsellor": a.counsellor_name,
    }


def duration_ja(span: timedelta) -> str:
    """10分, 1時間30分, 5秒: how long, as the terms say it."""
    total = int(span.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(hours, "時間"), (minutes, "分"), (seconds, "秒")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0分"


def _terms_label(policy: OfficePolicy, version: str | None) -> str:
    if not version:
        return "お申込み時点の版"
    for t in policy.terms:
        if t.version == version:
            d = t.effective_from
            return f"{version}版、{d.year}年{d.month}月{d.day}日施行"
    return f"{version}版"


def _tidy(text: str) -> str:
    """Plain text as a person reads it: no trailing spaces, at most one blank line in a row."""
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
