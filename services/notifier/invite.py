"""The calendar entry an email carries: an iCalendar object (RFC 5545) for iTIP over email (RFC 5546,
RFC 6047), built with the `icalendar` library rather than by hand (folding at 75 octets, escaping of
`,;\\`, line ends, parameter quoting are the library's).

- UID: one per booking and side (`domain.person_uid`, `domain.counsellor_uid`), the same across
  appointment versions, so a moved consultation updates the entry already in the calendar.
- SEQUENCE: the appointment version; a cancellation one above the version it cancels (`domain.sequence`).
- METHOD:REQUEST (STATUS:CONFIRMED) for a confirmation, notice, change or assignment; METHOD:CANCEL
  (STATUS:CANCELLED) for a cancellation.
- DTSTART/DTEND with TZID=Asia/Tokyo and its VTIMEZONE: the offices' local time, shown as such by
  every client whatever the reader's zone; the appointment itself is stored and sent in UTC.
- LOCATION and URL: the join URL (R16). ORGANIZER: the office's sender address, named as the office.
- R12: nothing of the person beyond what the email already holds, and less: no address, phone or
  email of theirs, no ATTENDEE for the person, and the counsellor's entry names no person at all
  (calendars are synced, shared with colleagues and kept long after an email is read; the
  counsellor's email has the name and topic). CLASS:PRIVATE asks shared calendars to hide the details.
"""

from __future__ import annotations

from datetime import datetime

from icalendar import Calendar, Event, vCalAddress

from services.notifier.domain import Invite, app_label, check_meeting_url
from shared.clock import JST, format_jst
from shared.policy import OfficePolicy

PRODID = "-//consult//notifier//JA"


def invitation(
    invite: Invite, policy: OfficePolicy, *, organizer: str, now: datetime, to_counsellor: bool
) -> bytes:
    """The iCalendar bytes (UTF-8, CRLF line ends) of one invitation or cancellation."""
    a = invite.appointment
    url = check_meeting_url(a.meeting_url)
    cancel = invite.method == "CANCEL"
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", invite.method)

    event = Event()
    event.add("uid", invite.uid)
    event.add("sequence", invite.sequence)
    event.add("dtstamp", now)  # UTC (a timezone-aware instant becomes ...Z)
    event.add("dtstart", a.start.astimezone(JST))
    event.add("dtend", a.end.astimezone(JST))
    event.add("summary", _summary(policy, to_counsellor=to_counsellor, cancel=cancel))
    event.add("description", _description(invite, policy, to_counsellor=to_counsellor, cancel=cancel))
    event.add("location", url)
    event.add("url", url)
    organizer_address = vCalAddress(f"mailto:{organizer}")
    organizer_address.params["CN"] = policy.name
    event.add("organizer", organizer_address)
    if to_counsellor and a.counsellor_email:
        # the counsellor's own work address, to which this email goes: clients match the entry to
        # its owner by it; they take part, nothing to answer (the office schedules, not a meeting host)
        attendee = vCalAddress(f"mailto:{a.counsellor_email}")
        attendee.params["CN"] = a.counsellor_name
        attendee.params["ROLE"] = "REQ-PARTICIPANT"
        attendee.params["PARTSTAT"] = "ACCEPTED"
        attendee.params["RSVP"] = "FALSE"
        event.add("attendee", attendee)
    event.add("status", "CANCELLED" if cancel else "CONFIRMED")
    event.add("transp", "OPAQUE")
    event.add("class", "PRIVATE")
    cal.add_component(event)
    cal.add_missing_timezones()  # VTIMEZONE for Asia/Tokyo (JST, +09:00, no daylight saving)
    return bytes(cal.to_ical())


def _summary(policy: OfficePolicy, *, to_counsellor: bool, cancel: bool) -> str:
    what = f"{policy.service_name}の担当" if to_counsellor else f"{policy.service_name}（{policy.name}）"
    return f"【取消し】{what}" if cancel else what


def _description(invite: Invite, policy: OfficePolicy, *, to_counsellor: bool, cancel: bool) -> str:
    a = invite.appointment
    lines = [
        f"この{policy.service_name}は取り消されました。"
        if cancel
        else f"{policy.name}の{policy.service_name}です。",
        f"実施日時：{format_jst(a.start, a.end)}（日本時間）",
        f"使用アプリ：{app_label(a.app)}",
        f"使用URL：{a.meeting_url}",
    ]
    if a.meeting_id:
        lines.append(f"会議ID：{a.meeting_id}")
    if a.passcode:
        lines.append(f"パスコード：{a.passcode}")
    if to_counsellor:
        lines.append(f"予約番号：{invite.booking_id}")
    else:
        lines.append(f"担当：{a.counsellor_name}")
    lines.append(f"お問い合わせ：{policy.name} 電話 {policy.phone}")
    return "\n".join(lines)
