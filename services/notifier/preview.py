"""The emails as a person reads them, in a terminal: what Mailpit received (what really went out).

    python -m services.notifier.preview --to taro@example.org      # delivered mail, via Mailpit's API

A template rendered from sample data, without SMTP, is `consultctl notifier sample OFFICE KIND`
(`ops/notice_samples.py`: the sample events live in `examples/`, outside the service).

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--to", help="recipient address: show what Mailpit received for it")
    parser.add_argument("--api", default=MAILPIT_API, help="Mailpit API base")
    args = parser.parse_args()
    if args.to:
        for msg in asyncio.run(delivered_to(args.to, args.api)):
            print(format_message(msg))
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
