"""Which event sends which notice, under which key: pure rules, no servers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from examples import notices
from services.notifier.domain import (
    HeaderInjection,
    Kind,
    check_header,
    check_meeting_url,
    message_id,
    plan,
)
from shared.clock import FixedClock
from shared.events import MessageError, Recipient
from shared.policy import OfficePolicy
from shared.settings import ServiceSettings
from shared.wording import cancel_guidance

POLICIES = ServiceSettings().policies()
KG: OfficePolicy = POLICIES["kushiro-gyosei"]
HW: OfficePolicy = POLICIES["kohoku-hellowork"]


def test_r06_kg_confirmation_is_sent_when_the_appointment_is_coordinated() -> None:
    notice = plan(notices.event(Kind.CONFIRMATION, KG, booking_id="b1"), KG)
    assert notice is not None
    assert notice.kind is Kind.CONFIRMATION
    assert notice.subject == KG.notice.subject
    assert notice.key == "b1/confirmation/v1"


def test_r06_hw_sends_nothing_on_confirmation_only_the_day_before_notice() -> None:
    assert plan(notices.event(Kind.CONFIRMATION, HW), HW) is None
    notice = plan(notices.event(Kind.NOTICE, HW), HW)
    assert notice is not None
    assert notice.subject == "オンライン職業相談"


def test_r06_an_office_without_a_notice_timer_sends_no_second_notice() -> None:
    assert plan(notices.event(Kind.NOTICE, KG), KG) is None


def test_the_key_names_the_notice_not_the_event() -> None:
    a = plan(notices.event(Kind.NOTICE, HW, booking_id="b2"), HW)
    b = plan(
        notices.event(Kind.NOTICE, HW, booking_id="b2", clock=FixedClock(notices.NOW + timedelta(1))), HW
    )
    assert a is not None and b is not None
    assert a.key == b.key  # a re-emitted event (new event id) is the same notice


def test_a_new_appointment_version_is_a_new_notice() -> None:
    v1 = plan(notices.event(Kind.CONFIRMATION, KG, booking_id="b3", version=1), KG)
    v2 = plan(notices.event(Kind.CONFIRMATION, KG, booking_id="b3", version=2), KG)
    assert v1 is not None and v2 is not None
    assert v1.key != v2.key


def test_a_second_recoordination_round_is_a_new_notice_the_same_round_is_not() -> None:
    first = notices.payload(Kind.RECOORDINATION, KG, booking_id="b4")
    again = plan(notices.event(Kind.RECOORDINATION, KG, booking_id="b4"), KG)
    later = plan(
        notices.event(
            Kind.RECOORDINATION,
            KG,
            booking_id="b4",
            hold_expires_at=first.hold_expires_at + timedelta(days=1),  # type: ignore[attr-defined]
        ),
        KG,
    )
    original = plan(notices.event(Kind.RECOORDINATION, KG, booking_id="b4"), KG)
    assert again is not None and later is not None and original is not None
    assert again.key == original.key
    assert later.key != original.key


def test_r08_a_no_show_cancellation_is_the_no_show_notice() -> None:
    notice = plan(notices.event(Kind.NO_SHOW, KG, booking_id="b5"), KG)
    assert notice is not None
    assert notice.kind is Kind.NO_SHOW
    assert notice.key == "b5/no_show/v1"


def test_r09_a_refusal_without_an_address_sends_nothing() -> None:
    event = notices.event(Kind.REFUSAL, KG)
    assert plan(event, KG) is not None
    bare = event.model_copy(update={"payload": event.payload.model_copy(update={"recipient": None})})
    assert plan(bare, KG) is None


def test_message_id_is_a_function_of_the_key() -> None:
    assert message_id("b1/notice/v1", "x.org") == message_id("b1/notice/v1", "x.org")
    assert message_id("b1/notice/v1", "x.org") != message_id("b1/notice/v2", "x.org")
    assert message_id("b1/notice/v1", "x.org").endswith("@x.org>")


@pytest.mark.parametrize("value", ["a\r\nBcc: x@evil.example", "a\nb", "a\rb", "a\x00b", "a\u2028b"])
def test_header_values_with_line_breaks_or_controls_are_refused(value: str) -> None:
    with pytest.raises(HeaderInjection):
        check_header("Subject", value)


def test_r07_kg_cancels_by_phone_or_email_and_by_phone_only_on_the_day() -> None:
    g = cancel_guidance(KG)
    assert g.channels == [f"電話（{KG.phone}）", f"メール（{KG.email}）"]
    assert g.same_day == [f"電話（{KG.phone}）"]


def test_r07_hw_cancels_by_phone_only() -> None:
    g = cancel_guidance(HW)
    assert g.channels == [f"電話（{HW.phone}）"]
    assert g.same_day is None


@pytest.mark.parametrize("url", ["javascript:alert(1)", "http://teams.example/x", 'https://x/"onclick=1'])
def test_r16_only_https_meeting_urls_go_into_a_mail(url: str) -> None:
    with pytest.raises(MessageError):
        check_meeting_url(url)


def test_the_recipient_travels_unchanged_into_the_notice() -> None:
    who = Recipient(name="佐藤 花子", email="hanako@example.org")
    notice = plan(notices.event(Kind.CANCELLATION, HW, recipient=who), HW)
    assert notice is not None
    assert notice.recipient == who


def test_r07_three_channels_are_listed_as_the_terms_list_them() -> None:
    from shared.wording import join_or

    assert join_or(["電話", "メール", "ウェブサイト"]) == "電話、メール又はウェブサイト"
    assert join_or(["電話", "メール"]) == "電話又はメール"
    assert join_or(["電話"]) == "電話"
