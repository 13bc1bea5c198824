"""The emails as a person reads them, in a terminal: from Mailpit (what really went out) or from samples.

    python -m services.notifier.preview --to taro@example.org      # delivered mail, via Mailpit's API
    python -m services.notifier.preview --sample kushiro-gyosei confirmation   # a template, no SMTP

`format_message(mailpit_message)` is the function the demo calls for each message it shows.
"""

from __future__ import annotations

import argparse
import asyncio
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import httpx

from shared.clock import format_jst

MAILPIT_API = "http://127.0.0.1:8025/api/v1"


def format_message(msg: Mapping[str, Any], width: int = 78) -> str:
    """One Mailpit message (GET /api/v1/message/{ID}) framed for a terminal: headers, then the text."""
    rule = "─" * width
    lines = [
        rule,
        f"件名    : {msg.get('Subject', '')}",
        f"差出人  : {_person(msg.get('From') or {})}",
        f"宛先    : {', '.join(_person(p) for p in msg.get('To') or [])}",
    ]
    if msg.get("Date"):
        lines.append(f"日時    : {format_jst(datetime.fromisoformat(str(msg['Date'])))}")
    if msg.get("MessageID"):
        lines.append(f"Message-ID: <{msg['MessageID']}>")
    lines += [rule, *(_wrap(line, width) for line in str(msg.get("Text", "")).splitlines()), rule]
    return "\n".join(lines)


def mailpit_shape(message: EmailMessage) -> dict[str, Any]:
    """A composed message in the shape Mailpit's API returns, so both print the same way."""
    text = message.get_body(preferencelist=("plain",))
    return {
        "Subject": str(message["Subject"]),
        "From": {
            "Name": message["From"].addresses[0].display_name,
            "Address": message["From"].addresses[0].addr_spec,
        },
        "To": [{"Name": a.display_name, "Address": a.addr_spec} for a in message["To"].addresses],
        "MessageID": str(message["Message-ID"]).strip("<>"),
        "Text": text.get_content() if text is not None else "",
    }


async def delivered_to(address: str, api: str = MAILPIT_API) -> list[dict[str, Any]]:
    """Every message Mailpit holds for this recipient, oldest first, with bodies."""
    async with httpx.AsyncClient(base_url=api.rstrip("/"), timeout=10) as client:
        found = await client.get("/search", params={"query": f'to:"{address}"', "limit": 200})
        found.raise_for_status()
        ids = [m["ID"] for m in reversed(found.json().get("messages", []))]
        return [(await client.get(f"/message/{i}")).raise_for_status().json() for i in ids]


def _person(p: Mapping[str, Any]) -> str:
    name, addr = p.get("Name") or "", p.get("Address") or ""
    return f"{name} <{addr}>" if name else addr


def _wrap(line: str, width: int) -> str:
    """Fold at display width (a kanji is two columns); URLs stay whole, no line starts with 。 or 、."""
    if "://" in line:
        return line
    out, cols, current = [], 0, ""
    for ch in line:
        w = 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        if cols + w > width and ch not in _NO_LINE_START:
            out.append(current)
            current, cols = "", 0
        current += ch
        cols += w
    return "\n".join([*out, current])


_NO_LINE_START = "。、，．）」』！？"


def render_sample(office_id: str, kind: str) -> str:
    """A notice rendered from sample data, framed like a delivered one (no SMTP)."""
    from services.notifier import domain, samples
    from services.notifier.compose import Composer
    from services.notifier.config import Settings

    settings = Settings()
    policy = settings.policies()[office_id]
    which = domain.Kind(kind)
    notice: domain.Notice | None
    if which is domain.Kind.COUNSELLOR_AGENDA:
        notice = _sample_agenda(policy)
    elif which in domain.COUNSELLOR_KINDS:
        found = domain.plan_counsellors(samples.counsellor_event(which, policy), policy)
        notice = next((n for n in found if n.kind is which), None)
    else:
        notice = domain.plan(samples.event(which, policy), policy)
    if notice is None:
        return f"{office_id}: {kind} is not sent under this office's policy"
    message = Composer(settings.mail_from).compose(
        notice, policy, message_id=domain.message_id(notice.key, settings.mail_domain), now=samples.NOW
    )
    return format_message(mailpit_shape(message))


def _sample_agenda(policy: Any) -> Any:
    from datetime import timedelta

    from services.notifier import agenda, domain, samples

    a = [samples.appointment(policy, f"bk-{h}", start=samples.START + timedelta(hours=h)) for h in (0, 4)]
    brief = domain.counsellor_brief(samples.brief(policy), policy)
    entries = [
        {
            "start": x.start,
            "end": x.end,
            "app": x.app,
            "meeting_url": x.meeting_url,
            "meeting_id": None,
            "passcode": None,
            "person": brief,
        }
        for x in a
    ]
    day = samples.START.date()
    sample = agenda.Agenda(
        "c-001", policy.office_id, day, "相談員 佐藤", "sato@counsellors.example.org", entries
    )
    return agenda.agenda_notice(policy, sample)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--to", help="recipient address: show what Mailpit received for it")
    parser.add_argument("--sample", nargs=2, metavar=("OFFICE", "KIND"), help="render a sample notice")
    parser.add_argument("--api", default=MAILPIT_API, help="Mailpit API base")
    args = parser.parse_args()
    if args.sample:
        print(render_sample(*args.sample))
    elif args.to:
        for msg in asyncio.run(delivered_to(args.to, args.api)):
            print(format_message(msg))
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
