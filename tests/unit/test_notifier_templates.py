"""The Japanese emails as composed, before any SMTP: content per office and kind, headers, escaping."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from pydantic import ValidationError

from examples import notices
from services.notifier.compose import Composer
from services.notifier.domain import Kind, Notice, message_id, plan
from shared.events import MessageError, Recipient
from shared.policy import OfficePolicy
from shared.settings import ServiceSettings

POLICIES = ServiceSettings().policies()
KG: OfficePolicy = POLICIES["kushiro-gyosei"]
HW: OfficePolicy = POLICIES["kohoku-hellowork"]
COMPOSER = Composer("no-reply@consult.example.org")
WHEN = "2026年11月25日(水) 10:00〜10:30"

#: what each office sends: KG confirms on coordination, HW sends the notice before the day (R06)
SENT = [
    (KG, Kind.CONFIRMATION),
    (KG, Kind.RECOORDINATION),
    (KG, Kind.CANCELLATION),
    (KG, Kind.NO_SHOW),
    (KG, Kind.REFUSAL),
    (HW, Kind.NOTICE),
    (HW, Kind.RECOORDINATION),
    (HW, Kind.CANCELLATION),
    (HW, Kind.NO_SHOW),
    (HW, Kind.REFUSAL),
]
WITH_APPOINTMENT = {Kind.CONFIRMATION, Kind.NOTICE, Kind.CANCELLATION, Kind.NO_SHOW}


def notice_of(kind: Kind, policy: OfficePolicy, **kwargs: object) -> Notice:
    notice = plan(notices.event(kind, policy, **kwargs), policy)  # type: ignore[arg-type]
    assert notice is not None
    return notice


def compose(kind: Kind, policy: OfficePolicy, **kwargs: object) -> EmailMessage:
    notice = notice_of(kind, policy, **kwargs)
    msg = COMPOSER.compose(notice, policy, message_id=message_id(notice.key, "x.org"), now=notices.NOW)
    # what the receiver parses: through bytes and back
    return email.message_from_bytes(bytes(msg), policy=email.policy.default)  # type: ignore[return-value]


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


@pytest.mark.parametrize(("policy", "kind"), SENT, ids=lambda v: getattr(v, "short_name", str(v)))
def test_every_kind_carries_what_every_email_must_give(policy: OfficePolicy, kind: Kind) -> None:
    msg = compose(kind, policy)
    for body in bodies(msg):
        if kind in WITH_APPOINTMENT:
            assert WHEN in body  # JST, Japanese form
            assert notices.join_url_base(policy) in body  # R16 URL
        assert {"teams": "Microsoft Teams", "teleoffice": "TeleOffice"}[policy.default_meeting.app] in body
        assert f"電話（{policy.phone}）" in body  # R07
        assert policy.private_room_note in body  # R15
        assert policy.recording_note in body  # R14
        assert all(item.text in body for item in policy.device_checklist)  # R19
        assert policy.terms[-1].version in body  # R17
        assert policy.name in body


def test_r06_hw_notice_subject_is_exactly_online_shokugyo_soudan_to_the_mypage_address() -> None:
    mypage = Recipient(name="港北 太郎", email="mypage-address@example.org")
    msg = compose(Kind.NOTICE, HW, recipient=mypage)
    assert msg["Subject"] == "オンライン職業相談"
    assert msg["To"].addresses[0].addr_spec == "mypage-address@example.org"
    text, _ = bodies(msg)
    assert WHEN in text
    assert notices.join_url_base(HW) in text


def test_r06_kg_confirmation_gives_date_time_and_url_once_coordinated() -> None:
    msg = compose(Kind.CONFIRMATION, KG)
    assert msg["Subject"] == KG.notice.subject
    text, _ = bodies(msg)
    assert f"実施日時：{WHEN}（日本時間）" in text
    assert "使用アプリ：Microsoft Teams" in text
    assert "使用URL：" + notices.join_url_base(KG) in text
    assert "御本人であることを確認" in text  # R05: identity checked at the session


def test_r07_kg_cancellation_by_phone_or_email_and_on_the_day_by_phone_only() -> None:
    text, _ = bodies(compose(Kind.CONFIRMATION, KG))
    assert f"電話（{KG.phone}）又はメール（{KG.email}）でご連絡ください" in text
    assert f"相談日当日のキャンセルは、電話（{KG.phone}）のみで受け付けます" in text


def test_r07_hw_cancellation_by_phone_only() -> None:
    text, _ = bodies(compose(Kind.NOTICE, HW))
    assert f"電話（{HW.phone}）のみでご連絡ください" in text
    assert "メール（" not in text


def test_r07_kg_replies_reach_the_centre_which_takes_email_cancellations() -> None:
    assert compose(Kind.CONFIRMATION, KG)["Reply-To"].addresses[0].addr_spec == KG.email
    assert compose(Kind.NOTICE, HW)["Reply-To"] is None  # HW: phone only


def test_r14_recording_is_prohibited_in_every_email() -> None:
    for policy, kind in SENT:
        text, html = bodies(compose(kind, policy))
        assert policy.recording_note in text and policy.recording_note in html


def test_r15_private_room_and_declared_interpreter_in_every_email() -> None:
    for policy, kind in SENT:
        text, _ = bodies(compose(kind, policy))
        assert policy.private_room_note in text
        assert "通訳" in text


def test_r19_device_checklist_of_the_office_in_every_email() -> None:
    text, _ = bodies(compose(Kind.NOTICE, HW))
    assert "パーソナルファイアウォール" in text  # HW only (第5条(4))
    assert "ウイルス対策ソフト" in text  # HW only (第5条(6))
    kg_text, _ = bodies(compose(Kind.CONFIRMATION, KG))
    assert "パーソナルファイアウォール" not in kg_text
    assert all(f"・{item.text}" in kg_text for item in KG.device_checklist)


def test_r08_r09_no_show_notice_says_deemed_cancelled_and_what_repeats_mean() -> None:
    text, _ = bodies(compose(Kind.NO_SHOW, HW))
    assert "10分経過したため" in text and "キャンセルとみなしました" in text
    assert f"{HW.refusal.within.days}日間に{HW.refusal.no_shows}回" in text
    assert f"{HW.refusal.refuse_for.days}日間" in text


def test_r09_refusal_notice_gives_its_expiry() -> None:
    text, _ = bodies(compose(Kind.REFUSAL, KG))
    assert "2027年5月21日(金) 09:00まで" in text  # 180 days after 2026-11-22 09:00 JST


def test_r05_recoordination_lists_the_alternatives_and_how_to_accept() -> None:
    text, _ = bodies(compose(Kind.RECOORDINATION, KG))
    assert "候補1（番号 opt-1）：2026年11月26日(木) 14:00〜14:30" in text
    assert "候補2（番号 opt-2）：2026年11月27日(金) 10:00〜10:30" in text
    assert "2026年11月24日(火) 09:00までに" in text
    assert f"電話（{KG.phone}）でお知らせください" in text


def test_html_alternative_escapes_what_the_person_typed() -> None:
    who = Recipient(name="<script>alert(1)</script>", email="x@example.org")
    text, html = bodies(compose(Kind.CONFIRMATION, KG, recipient=who))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<script>alert(1)</script> 様" in text  # plain text shows it as typed, harmlessly


INJECTIONS = [
    {"name": "山田\r\nBcc: victim@example.org", "email": "x@example.org"},
    {"name": "山田", "email": "x@example.org\r\nBcc: victim@example.org"},
]


@pytest.mark.parametrize("fields", INJECTIONS)
def test_header_injection_through_the_recipient_is_refused_by_the_contract(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="U\\+000D"):
        Recipient(**fields)


@pytest.mark.parametrize("fields", INJECTIONS)
def test_header_injection_through_the_recipient_is_refused(fields: dict[str, str]) -> None:
    """The composer's own check, behind the contract's (a recipient built without validation)."""
    notice = notice_of(Kind.CONFIRMATION, KG, recipient=Recipient.model_construct(**fields))
    with pytest.raises(MessageError) as caught:
        COMPOSER.compose(notice, KG, message_id="<a@x.org>", now=notices.NOW)
    assert caught.value.reason == "header-injection"


def test_an_invalid_address_is_a_permanent_failure() -> None:
    notice = notice_of(Kind.CONFIRMATION, KG, recipient=Recipient(name="x", email="not-an-address"))
    with pytest.raises(MessageError) as caught:
        COMPOSER.compose(notice, KG, message_id="<a@x.org>", now=notices.NOW)
    assert caught.value.reason == "invalid-address"


def test_headers_message_id_and_alternatives() -> None:
    notice = notice_of(Kind.CONFIRMATION, KG, booking_id="b-mid")
    msg = compose(Kind.CONFIRMATION, KG, booking_id="b-mid")
    assert msg["Message-ID"] == message_id(notice.key, "x.org")
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["From"].addresses[0].display_name == KG.name


def test_a_third_office_works_with_the_generic_templates_and_its_policy() -> None:
    third = KG.model_copy(
        update={
            "office_id": "naha-test",
            "name": "那覇テスト相談所",
            "service_name": "オンライン窓口相談",
            "phone": "098-000-0000",
            "email": None,
        }
    )
    for kind in (Kind.CONFIRMATION, Kind.RECOORDINATION, Kind.CANCELLATION, Kind.NO_SHOW, Kind.REFUSAL):
        text, _ = bodies(compose(kind, third))
        assert "那覇テスト相談所" in text and "098-000-0000" in text
        assert "行政相談委員" not in text  # KG's own wording stays KG's


def test_r08_grace_is_written_as_the_terms_write_it() -> None:
    from datetime import timedelta

    from services.notifier.compose import duration_ja

    assert duration_ja(timedelta(minutes=10)) == "10分"
    assert duration_ja(timedelta(seconds=5)) == "5秒"
    assert duration_ja(timedelta(hours=1, minutes=30)) == "1時間30分"


def test_r18_fee_and_communication_costs_in_every_email() -> None:
    for policy, kind in SENT:
        text, html = bodies(compose(kind, policy))
        assert policy.fee_note in text and policy.fee_note in html
    assert "無料" in HW.fee_note  # HW 第3条: the consultation is free; costs of communication are the user's
    assert "利用者の御負担" in KG.fee_note  # KG 第10条(5)


@pytest.mark.parametrize(
    ("policy", "wording"),
    [
        (KG, "お申し込みいただいたウェブサイトから新しい御希望の日時をお送りいただけます"),
        (HW, "お申込みいただいたウェブサイトから新しいご希望の日時をお送りいただけます"),
    ],
    ids=["KG", "HW"],
)
def test_r05_after_a_decline_the_person_may_send_new_wished_times_through_the_portal(
    policy: OfficePolicy, wording: str
) -> None:
    """KG 第4条(2) 改めて日程調整: the email after a decline says the office coordinates again and that
    new wished times may be sent through the portal (POST /v1/bookings/{id}/windows), in the office's
    wording (KG writes 御希望, 御連絡)."""
    msg = compose(Kind.AWAITING, policy, reason="declined")
    for body in bodies(msg):
        assert wording in body
        assert "改めて" in body and f"電話（{policy.phone}）" in body
        assert policy is KG or "御" not in body  # HW writes ご
