"""The counsellor's side (issue 17): which emails, under which keys, with what of the person; and when
the daily agenda is due. Pure rules and templates, no servers."""

from __future__ import annotations

import email
import email.policy
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from examples import notices
from services.notifier.agenda import Agenda, agenda_days, agenda_notice
from services.notifier.compose import Composer
from services.notifier.domain import Kind, Notice, message_id, plan_all, plan_counsellors
from shared.clock import JST, FixedClock
from shared.events import Appointment, PersonBrief, Recipient
from shared.policy import OfficePolicy
from shared.settings import ServiceSettings

POLICIES = ServiceSettings().policies()
KG: OfficePolicy = POLICIES["kushiro-gyosei"]
HW: OfficePolicy = POLICIES["kohoku-hellowork"]
COMPOSER = Composer("no-reply@consult.example.org")
WHO = Recipient(name="山田 太郎", email="taro.yamada@example.org")
PHONE = "090-1234-5678"
ADDRESS = "北海道釧路市幸町1-1"
NUMBER = "1401-123456-7"


def appt(
    policy: OfficePolicy, cid: str = "c-sato", *, days: int = 0, version: int = 1, **kw: Any
) -> Appointment:
    return notices.appointment(
        policy,
        "bk-1",
        start=notices.START + timedelta(days=days),
        version=version,
        counsellor_id=cid,
        counsellor_name=f"相談員 {cid}",
        counsellor_email=f"{cid}@office.example.org",
        **kw,
    )


def counsellor_notices(policy: OfficePolicy, kind: Kind = Kind.CONFIRMATION, **fields: Any) -> list[Notice]:
    return plan_counsellors(notices.event(kind, policy, booking_id="bk-1", recipient=WHO, **fields), policy)


def bodies(n: Notice, policy: OfficePolicy) -> tuple[EmailMessage, str, str]:
    msg = COMPOSER.compose(n, policy, message_id=message_id(n.key, "x.org"), now=notices.NOW)
    got: EmailMessage = email.message_from_bytes(bytes(msg), policy=email.policy.default)  # type: ignore[assignment]
    text, html = got.get_body(("plain",)), got.get_body(("html",))
    assert text is not None and html is not None
    return got, text.get_content(), html.get_content()


# --------------------------------------------------------------------------- which emails, which keys


def test_an_assignment_goes_to_the_counsellors_work_address_under_its_own_key() -> None:
    [n] = counsellor_notices(KG, appointment=appt(KG), person=notices.brief(KG))
    assert n.kind is Kind.COUNSELLOR_ASSIGNMENT
    assert n.key == "bk-1/counsellor_assignment/v1"
    assert n.recipient == Recipient(name="相談員 c-sato", email="c-sato@office.example.org")
    assert n.subject == "【オンライン相談】担当する相談のお知らせ"
    # KG's person is written to as well: two emails, two keys
    keys = [
        x.key
        for x in plan_all(notices.event(Kind.CONFIRMATION, KG, booking_id="bk-1", appointment=appt(KG)), KG)
    ]
    assert keys == ["bk-1/confirmation/v1", "bk-1/counsellor_assignment/v1"]


def test_a_counsellor_without_a_work_address_gets_no_email() -> None:
    assert counsellor_notices(KG, appointment=notices.appointment(KG, "bk-1")) == []
    assert counsellor_notices(HW, Kind.CANCELLATION, appointment=notices.appointment(HW, "bk-1")) == []


def test_a_move_with_the_same_counsellor_is_one_update_with_the_new_time() -> None:
    [n] = counsellor_notices(HW, appointment=appt(HW, days=1, version=2), previous=appt(HW))
    assert n.kind is Kind.COUNSELLOR_CHANGE
    assert n.key == "bk-1/counsellor_change/v2"
    assert n.previous is not None and n.previous.version == 1
    assert n.invite is not None and n.invite.method == "REQUEST" and n.invite.sequence == 2
    _, text, _ = bodies(n, HW)
    assert "変更前の実施日時" in text
    assert "2026年11月25日(水) 10:00〜10:30" in text  # before
    assert "2026年11月26日(木) 10:00〜10:30" in text  # after


def test_a_move_to_another_counsellor_assigns_the_new_one_and_cancels_the_previous_one() -> None:
    new, old = counsellor_notices(
        KG,
        appointment=appt(KG, "c-new", days=1, version=2),
        previous=appt(KG, "c-old"),
        person=notices.brief(KG),
    )
    assert (new.kind, new.key, new.recipient.email) == (
        Kind.COUNSELLOR_ASSIGNMENT,
        "bk-1/counsellor_assignment/v2",
        "c-new@office.example.org",
    )
    assert (old.kind, old.key, old.recipient.email) == (
        Kind.COUNSELLOR_CANCELLATION,
        "bk-1/counsellor_cancellation/v1",
        "c-old@office.example.org",
    )
    assert old.invite is not None and new.invite is not None
    assert old.invite.method == "CANCEL" and old.invite.uid == "bk-1.c-old@kushiro-gyosei.consult"
    assert old.invite.sequence == 2  # at least the last request the previous counsellor had (v1)
    assert new.invite.uid == "bk-1.c-new@kushiro-gyosei.consult" and new.invite.sequence == 2
    _, text, _ = bodies(old, KG)
    assert "担当が変更になりました" in text
    assert "2026年11月25日(水) 10:00〜10:30" in text  # the time they no longer hold


def test_a_cancellation_tells_the_counsellor_with_the_recipients_name() -> None:
    [n] = counsellor_notices(HW, Kind.CANCELLATION, appointment=appt(HW))
    assert n.kind is Kind.COUNSELLOR_CANCELLATION
    assert n.key == "bk-1/counsellor_cancellation/v1"
    assert n.invite is not None and n.invite.method == "CANCEL"
    _, text, html = bodies(n, HW)
    assert "相談者：山田 太郎 様" in text
    assert "取り消されました" in text
    assert WHO.email not in text + html


def test_a_redelivered_or_reemitted_event_is_the_same_counsellor_email() -> None:
    later = notices.NOW + timedelta(hours=1)
    a = plan_counsellors(notices.event(Kind.CONFIRMATION, HW, booking_id="bk-1", appointment=appt(HW)), HW)
    b = plan_counsellors(
        notices.event(
            Kind.CONFIRMATION, HW, booking_id="bk-1", appointment=appt(HW), clock=FixedClock(later)
        ),
        HW,
    )
    assert [n.key for n in a] == [n.key for n in b]


# --------------------------------------------------------------------------- what of the person (R12)


@pytest.mark.parametrize("policy", [KG, HW], ids=lambda p: p.short_name)
def test_r12_the_counsellors_email_has_the_name_and_topic_and_no_contact_details(
    policy: OfficePolicy,
) -> None:
    brief = PersonBrief(name="山田 太郎", topic="年金の手続について", jobseeker_number=NUMBER)
    a = appt(policy, meeting_id="123 456 789", passcode="pa55")
    [n] = counsellor_notices(policy, appointment=a, person=brief)
    msg, text, html = bodies(n, policy)
    for body in (text, html):
        assert "山田 太郎 様" in body
        assert "年金の手続について" in body
        assert "2026年11月25日(水) 10:00〜10:30" in body
        assert a.meeting_url in body
        assert {"kushiro-gyosei": "Microsoft Teams", "kohoku-hellowork": "TeleOffice"}[
            policy.office_id
        ] in body
        assert "123 456 789" in body and "pa55" in body
    whole = bytes(msg).decode(errors="replace") + text + html
    for personal in (WHO.email, "taro.yamada", PHONE, ADDRESS):
        assert personal not in whole
    assert msg["To"].addresses[0].addr_spec == "c-sato@office.example.org"


def test_the_job_seeker_number_is_shown_for_hw_only() -> None:
    brief = PersonBrief(name="山田 太郎", topic="応募書類", jobseeker_number=NUMBER)
    [hw] = counsellor_notices(HW, appointment=appt(HW), person=brief)
    [kg] = counsellor_notices(KG, appointment=appt(KG), person=brief)  # even if booking sent one
    assert f"求職番号：{NUMBER}" in bodies(hw, HW)[1]
    assert NUMBER in bodies(hw, HW)[2]
    _, kg_text, kg_html = bodies(kg, KG)
    assert NUMBER not in kg_text + kg_html
    assert "求職番号" not in kg_text


def test_without_a_brief_the_counsellor_is_told_the_name_only() -> None:
    [n] = counsellor_notices(KG, appointment=appt(KG))
    _, text, _ = bodies(n, KG)
    assert "相談者：山田 太郎 様" in text
    assert "相談内容" not in text


def test_counsellors_get_none_of_the_persons_notes() -> None:
    [n] = counsellor_notices(HW, appointment=appt(HW), person=notices.brief(HW))
    _, text, _ = bodies(n, HW)
    assert "キャンセルのご連絡" not in text  # the person's cancellation guidance (R07)
    assert "ご利用になる端末の確認事項" not in text  # the person's checklist (R19)
    assert text.startswith("相談員 c-sato 様")


# --------------------------------------------------------------------------- the agenda: when


def at(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=JST)


@pytest.mark.parametrize(
    ("now", "due"),
    [
        (at(2026, 11, 25, 16, 59), []),  # Wed before 17:00: nothing yet
        (at(2026, 11, 25, 17, 0), [date(2026, 11, 26)]),  # Wed 17:00: Thursday's
        (at(2026, 11, 25, 23, 30), [date(2026, 11, 26)]),
        (at(2026, 11, 26, 8, 59), [date(2026, 11, 26)]),  # missed at 17:00: still before opening
        (at(2026, 11, 26, 9, 0), []),  # the day has begun
        (at(2026, 11, 20, 17, 0), [date(2026, 11, 24)]),  # Fri: Mon 23 is 勤労感謝の日, so Tuesday's
        (at(2026, 11, 22, 12, 0), [date(2026, 11, 24)]),  # Sunday, catching up Friday's
        (at(2026, 12, 28, 17, 0), [date(2027, 1, 4)]),  # before 年末年始: the first open day after it
    ],
)
def test_the_agenda_of_the_next_open_day_is_due_from_the_policy_time(now: datetime, due: list[date]) -> None:
    assert agenda_days(KG, now) == due
    assert agenda_days(HW, now) == due  # both offices: 17:00, Saturday and Sunday closed


def test_an_office_that_does_not_ask_for_it_gets_no_agenda() -> None:
    off = KG.model_copy(
        update={"counsellor_agenda": KG.counsellor_agenda.model_copy(update={"enabled": False})}
    )
    assert agenda_days(off, at(2026, 11, 25, 17, 0)) == []


def test_the_default_policy_is_off_at_five() -> None:
    from shared.policy import CounsellorAgendaPolicy

    default = CounsellorAgendaPolicy()
    assert default.enabled is False
    assert (default.at.hour, default.at.minute) == (17, 0)
    assert KG.counsellor_agenda.enabled and HW.counsellor_agenda.enabled  # both offices ask for it


# --------------------------------------------------------------------------- the agenda: what


def entry(
    policy: OfficePolicy, hour: int, name: str, topic: str | None, number: str | None
) -> dict[str, Any]:
    a = notices.appointment(policy, f"bk-{hour}", start=at(2026, 11, 26, hour))
    return {
        "start": a.start,
        "end": a.end,
        "app": a.app,
        "meeting_url": a.meeting_url,
        "meeting_id": None,
        "passcode": None,
        "person": {"name": name, "topic": topic, "jobseeker_number": number},
    }


def test_the_agenda_lists_time_app_url_name_and_topic_of_each_consultation() -> None:
    agenda = Agenda(
        counsellor_id="hw-tanaka",
        office_id=HW.office_id,
        day=date(2026, 11, 26),
        name="田中 一郎",
        email="tanaka@hw.example.org",
        entries=[entry(HW, 10, "山田 太郎", "応募書類", NUMBER), entry(HW, 14, "佐藤 花子", None, None)],
    )
    n = agenda_notice(HW, agenda)
    assert n.key == "counsellor:hw-tanaka/counsellor_agenda/2026-11-26"
    assert n.subject == "【オンライン職業相談】11月26日(木)の相談予定"
    assert n.invite is None
    msg, text, html = bodies(n, HW)
    assert text.startswith("田中 一郎 様")
    assert "2026年11月26日(木)に担当いただく" in text
    assert "（2件、日本時間）" in text
    assert text.index("■ 10:00〜10:30") < text.index("■ 14:00〜14:30")
    for body in (text, html):
        assert "山田 太郎 様" in body and "佐藤 花子 様" in body
        assert "応募書類" in body
        assert NUMBER in body
        assert "TeleOffice" in body
        assert notices.sample_join_url(HW, "bk-10") in body
    assert [p for p in msg.walk() if p.get_content_type() == "text/calendar"] == []


@pytest.mark.parametrize("kind", list(Kind), ids=str)
@pytest.mark.parametrize("office", ["kushiro-gyosei", "kohoku-hellowork"])
def test_every_kind_has_a_sample_to_preview(office: str, kind: Kind) -> None:
    from ops.notice_samples import render

    shown = render(office, kind.value)
    assert "件名" in shown or "is not sent under this office's policy" in shown
    if kind.value.startswith("counsellor_"):
        assert "宛先    : 相談員 佐藤 <sato@counsellors.example.org>" in shown
        assert "taro.yamada" not in shown
