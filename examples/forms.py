"""Example requests, as a portal or the job-seeker system sends them: used by the tests and the demo.

policy = settings.policies()["kushiro-gyosei"]
day = OfficeCalendar(policy).first_bookable(now + timedelta(days=1))
httpx.post(f"{url}/v1/offices/kushiro-gyosei/bookings", json=kg_form(policy, day, now),
           headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "demo-kg-1"})
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any

from shared.clock import JST
from shared.policy import OfficePolicy


def at(day: date, hhmm: str) -> str:
    """An ISO instant in JST, e.g. at(day, '10:00') -> '2026-11-25T10:00:00+09:00'."""
    return datetime.combine(day, time.fromisoformat(hhmm), JST).isoformat()


def consent(policy: OfficePolicy, now: datetime) -> dict[str, Any]:
    """Every checklist item confirmed (R19, R03 webcam), the terms in force (R17), nobody attending (R15)."""
    return {
        "device_checklist": [c.id for c in policy.device_checklist],
        "terms_version": policy.terms_in_force(now).version,
        "companions": [],
    }


#: where the KG example person lives (釧路, one of KG's served areas, R20)
KG_ADDRESS = "北海道釧路市幸町10-3"


def kg_form(
    policy: OfficePolicy,
    day: date,
    now: datetime,
    *,
    window: tuple[str, str] = ("10:00", "12:00"),
    **fields: Any,
) -> dict[str, Any]:
    """KG 第4条(1): 氏名, 住所, 電話番号, メールアドレス, 希望日時 (a range) and 分間."""
    return {
        "name": "釧路 太郎",
        "name_kana": "クシロ タロウ",
        "address": KG_ADDRESS,
        "phone": "0154-22-1234",
        "email": f"taro.{uuid.uuid4().hex[:8]}@example.jp",
        "windows": [{"start": at(day, window[0]), "end": at(day, window[1])}],
        "duration_minutes": 30,
        **consent(policy, now),
        **fields,
    }


def hw_form(
    policy: OfficePolicy,
    day: date,
    now: datetime,
    *,
    jobseeker_number: str,
    phone: str,
    window: tuple[str, str] = ("13:00", "15:00"),
    **fields: Any,
) -> dict[str, Any]:
    """HW 第6条(2): 氏名, 求職番号, 登録した電話番号, 相談内容 (and the wished day)."""
    return {
        "name": "港北 花子",
        "jobseeker_number": jobseeker_number,
        "phone": phone,
        "topic": "事務職への応募書類について相談したい",
        "windows": [{"start": at(day, window[0]), "end": at(day, window[1])}],
        **consent(policy, now),
        **fields,
    }


def jobseeker_message(
    office_id: str,
    number: str,
    phone: str,
    mypage_email: str | None,
    *,
    sent_at: datetime,
    kind: str = "jobseeker.registered",
    name: str = "港北 花子",
    active: bool = True,
) -> dict[str, Any]:
    """What the job-seeker system publishes to consult.intake (routing key = kind)."""
    return {
        "message_id": str(uuid.uuid4()),
        "type": kind,
        "office_id": office_id,
        "sent_at": sent_at.isoformat(),
        "source": "hw-jobseeker-system",
        "jobseeker_number": number,
        "name": name,
        "phone": phone,
        "mypage_email": mypage_email,
        "active": active,
    }


def booking_command(
    portal_id: str, office_id: str, idempotency_key: str, body: dict[str, Any], *, sent_at: datetime
) -> dict[str, Any]:
    """A booking request over AMQP: publish to consult.intake with routing key booking.request."""
    return portal_command(
        "booking.request", portal_id, office_id, sent_at, idempotency_key=idempotency_key, body=body
    )


def portal_command(
    kind: str, portal_id: str, office_id: str, sent_at: datetime, **fields: Any
) -> dict[str, Any]:
    """A portal's command to consult.intake (routing key = kind), with a fresh message id."""
    return {
        "message_id": str(uuid.uuid4()),
        "type": kind,
        "office_id": office_id,
        "sent_at": sent_at.isoformat(),
        "portal_id": portal_id,
        **fields,
    }


def windows_form(*windows: tuple[date, str, str], duration_minutes: int | None = None) -> dict[str, Any]:
    """The person's new wished windows (R05, after a decline): each (day, 'HH:MM', 'HH:MM') in JST."""
    spans = [{"start": at(day, a), "end": at(day, b)} for day, a, b in windows]
    return {"windows": spans, "duration_minutes": duration_minutes}


def windows_command(
    portal_id: str, office_id: str, booking_id: str, body: dict[str, Any], *, sent_at: datetime
) -> dict[str, Any]:
    """New wished windows over AMQP: publish to consult.intake with routing key booking.change_windows."""
    return portal_command(
        "booking.change_windows", portal_id, office_id, sent_at, booking_id=booking_id, body=body
    )
