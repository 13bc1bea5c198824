"""The notifier in-process against real RabbitMQ, FerretDB and the shared Mailpit.

Each test drives the notifier by publishing the booking service's events itself, and finds its own
mail by a unique recipient address.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from typer.testing import CliRunner

from examples import notices
from ops.cli import app as cli_app
from services.notifier.app import create_app
from services.notifier.config import Settings
from services.notifier.delivery import DeliveryService
from services.notifier.domain import Kind, message_id, plan
from services.notifier.store import Claim
from shared import topology
from shared.clock import FixedClock
from shared.events import Envelope, Recipient
from shared.policy import OfficePolicy
from shared.runtime import Runtime
from tests import support
from tests.support import Mailpit, eventually, serve, unique

POLICIES = Settings().policies()
KG: OfficePolicy = POLICIES["kushiro-gyosei"]
HW: OfficePolicy = POLICIES["kohoku-hellowork"]
WHEN = "2026年11月25日(水) 10:00〜10:30"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Notifier:
    service: DeliveryService
    runtime: Runtime
    amqp_url: str
    seen: list[dict[str, Any]] = field(default_factory=list)  # notification.* events, as published
    published: int = 0  # events this test sent the notifier
    sentinels: set[str] = field(default_factory=set)
    probe: tuple[aio_pika.abc.AbstractChannel, str] | None = None

    async def publish(self, event: Envelope[Any], times: int = 1) -> None:
        for _ in range(times):
            await self.runtime.publisher.publish(event)
            self.published += 1

    async def quiet(self) -> None:
        """Negative checks: every event the test sent is settled, whatever it caused is published
        and seen. (An email the notifier sent is in Mailpit before its delivery is settled.)"""
        await support.quiet(self.runtime, settled=self.published)
        assert self.probe is not None
        await support.flush(*self.probe, self.sentinels)

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == type_]

    async def wait_events(self, type_: str, n: int = 1) -> list[dict[str, Any]]:
        async def enough() -> list[dict[str, Any]]:
            found = self.events(type_)
            return found if len(found) >= n else []

        return await eventually(enough, timeout=60, what=f"{n} x {type_}")

    async def parked(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        conn = await aio_pika.connect(self.amqp_url)
        out = []
        async with conn:
            q = await (await conn.channel()).get_queue(topology.NOTIFIER.parking)
            while (m := await q.get(fail=False)) is not None:
                out.append(m)
                await m.ack()
        return out


@asynccontextmanager
async def running(settings: Settings, **kwargs: Any) -> AsyncIterator[Notifier]:
    app = create_app(settings, **kwargs)
    async with serve(app):
        service: DeliveryService = app.state.delivery
        notifier = Notifier(service, service.runtime, settings.amqp_url)
        conn = await aio_pika.connect(settings.amqp_url)
        async with conn:
            ch = await conn.channel()
            q = await ch.declare_queue(exclusive=True)
            await q.bind(topology.EVENTS, routing_key="notification.*")
            notifier.probe = (ch, q.name)

            async def collect(m: aio_pika.abc.AbstractIncomingMessage) -> None:
                if (token := support.sentinel_of(m)) is not None:
                    notifier.sentinels.add(token)
                else:
                    notifier.seen.append(json.loads(m.body))
                await m.ack()

            await q.consume(collect)
            yield notifier


@pytest.fixture
async def notifier(make_settings: Callable[..., Settings]) -> AsyncIterator[Notifier]:
    async with running(make_settings(Settings)) as n:
        yield n


def person(prefix: str = "p") -> Recipient:
    return Recipient(name="山田 太郎", email=f"{unique(prefix + '-')}@example.org")


async def one_mail(mailpit: Mailpit, address: str) -> dict[str, Any]:
    """The single message delivered to this address, in full."""
    found = await eventually(lambda: mailpit.to(address), timeout=30, what=f"mail to {address}")
    assert len(found) == 1, f"expected one mail to {address}, got {len(found)}"
    return await mailpit.message(found[0]["ID"])


# --------------------------------------------------------------------------- R06


async def test_r06_hw_notice_arrives_with_subject_exactly_online_shokugyo_soudan(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    mypage = person("hw-mypage")
    await notifier.publish(notices.event(Kind.NOTICE, HW, recipient=mypage))
    msg = await one_mail(mailpit, mypage.email)
    assert msg["Subject"] == "オンライン職業相談"
    assert msg["To"][0]["Address"] == mypage.email
    assert WHEN in msg["Text"]
    assert "使用アプリ：TeleOffice" in msg["Text"]
    assert notices.join_url_base(HW) in msg["Text"]
    assert notices.join_url_base(HW) in msg["HTML"]


async def test_r06_kg_confirmation_arrives_with_date_time_app_and_url(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    who = person("kg-confirm")
    await notifier.publish(notices.event(Kind.CONFIRMATION, KG, recipient=who, booking_id=unique("b-")))
    msg = await one_mail(mailpit, who.email)
    assert msg["Subject"] == KG.notice.subject
    assert f"実施日時：{WHEN}（日本時間）" in msg["Text"]
    assert "使用アプリ：Microsoft Teams" in msg["Text"]
    assert notices.join_url_base(KG) in msg["Text"]
    assert msg["ReplyTo"][0]["Address"] == KG.email  # R07: email cancellations reach the centre


async def test_r06_hw_confirmation_sends_no_email(notifier: Notifier, mailpit: Mailpit) -> None:
    who = person("hw-confirm")
    await notifier.publish(notices.event(Kind.CONFIRMATION, HW, recipient=who))

    async def handled() -> bool:
        return notifier.runtime.consumer.stats["handled"] >= 1

    await eventually(handled, what="booking.confirmed handled")
    await notifier.quiet()  # nothing in flight to SMTP either
    assert await mailpit.to(who.email) == []
    assert notifier.events("notification.sent") == []


# --------------------------------------------------------------------------- every kind


@pytest.mark.parametrize(
    ("policy", "kind"),
    [
        (KG, Kind.CONFIRMATION),
        (HW, Kind.NOTICE),
        (KG, Kind.RECOORDINATION),
        (HW, Kind.CANCELLATION),
        (KG, Kind.NO_SHOW),
        (HW, Kind.REFUSAL),
    ],
    ids=lambda v: getattr(v, "short_name", str(v)),
)
async def test_every_kind_is_delivered_with_its_required_content(
    notifier: Notifier, mailpit: Mailpit, policy: OfficePolicy, kind: Kind
) -> None:
    who = person(f"{kind.value}")
    event = notices.event(kind, policy, recipient=who)
    await notifier.publish(event)
    msg = await one_mail(mailpit, who.email)
    for body in (msg["Text"], msg["HTML"]):
        if kind not in (Kind.RECOORDINATION, Kind.REFUSAL):
            assert WHEN in body
            assert notices.join_url_base(policy) in body  # R16
        assert f"電話（{policy.phone}）" in body  # R07
        assert policy.private_room_note in body  # R15
        assert policy.recording_note in body  # R14
        assert all(item.text in body for item in policy.device_checklist)  # R19
        assert policy.terms[-1].version in body  # R17
    specific = {
        Kind.RECOORDINATION: "候補1（番号 opt-1）：2026年11月26日(木) 14:00〜14:30",
        Kind.CANCELLATION: "ご予約を取り消しました",
        Kind.NO_SHOW: "キャンセルとみなしました",
        Kind.REFUSAL: "2027年5月21日(金) 09:00まで",
    }
    if kind in specific:
        assert specific[kind] in msg["Text"]
    sent = await notifier.wait_events("notification.sent")
    assert sent[0]["payload"]["kind"] == kind.value
    assert sent[0]["correlation_id"] == str(event.correlation_id)


# --------------------------------------------------------------------------- named rules through SMTP


async def test_r07_cancellation_channels_in_the_delivered_mail(notifier: Notifier, mailpit: Mailpit) -> None:
    kg, hw = person("r07-kg"), person("r07-hw")
    await notifier.publish(notices.event(Kind.CONFIRMATION, KG, recipient=kg))
    await notifier.publish(notices.event(Kind.NOTICE, HW, recipient=hw))
    kg_text = (await one_mail(mailpit, kg.email))["Text"]
    hw_text = (await one_mail(mailpit, hw.email))["Text"]
    assert f"電話（{KG.phone}）又はメール（{KG.email}）でご連絡ください" in kg_text
    assert f"相談日当日のキャンセルは、電話（{KG.phone}）のみで受け付けます" in kg_text
    assert f"電話（{HW.phone}）のみでご連絡ください" in hw_text
    assert "メール（" not in hw_text


async def test_r14_no_recording_reminder_in_the_delivered_mail(notifier: Notifier, mailpit: Mailpit) -> None:
    who = person("r14")
    await notifier.publish(notices.event(Kind.NOTICE, HW, recipient=who))
    msg = await one_mail(mailpit, who.email)
    assert "録画・録音・インターネット等への配信は禁止" in msg["Text"]
    assert "録画・録音・インターネット等への配信は禁止" in msg["HTML"]


async def test_r15_private_room_reminder_in_the_delivered_mail(notifier: Notifier, mailpit: Mailpit) -> None:
    who = person("r15")
    await notifier.publish(notices.event(Kind.CONFIRMATION, KG, recipient=who))
    text = (await one_mail(mailpit, who.email))["Text"]
    assert "個室又は周囲に他人がいない環境を整えてください" in text
    assert "通訳、介助者等の同席が必要な場合には、あらかじめ当センターにお伝えください" in text


async def test_r19_device_checklist_in_the_delivered_mail(notifier: Notifier, mailpit: Mailpit) -> None:
    who = person("r19")
    await notifier.publish(notices.event(Kind.NOTICE, HW, recipient=who))
    text = (await one_mail(mailpit, who.email))["Text"]
    for item in HW.device_checklist:
        assert f"・{item.text}" in text


# --------------------------------------------------------------------------- exactly once in effect


async def test_the_same_event_published_five_times_gives_one_email(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    who = person("five")
    event = notices.event(Kind.CONFIRMATION, KG, recipient=who)
    await notifier.publish(event, times=5)

    async def settled() -> bool:
        s = notifier.runtime.consumer.stats
        return s["handled"] + s["duplicates"] >= 5

    await eventually(settled, timeout=20, what="five deliveries settled")
    msg = await one_mail(mailpit, who.email)
    sent = await notifier.wait_events("notification.sent")
    await notifier.quiet()
    assert len(notifier.events("notification.sent")) == 1
    assert sent[0]["payload"]["message_id"] == f"<{msg['MessageID']}>"
    # the server's acceptance was recorded once, and its window measured
    window = notifier.runtime.metrics.get_sample_value("consult_notifier_accept_to_mark_seconds_count")
    assert window == 1.0


async def test_five_events_meaning_the_same_notice_give_one_email(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    who, booking = person("same-notice"), unique("b-")
    clocks = [FixedClock(notices.NOW + timedelta(minutes=i)) for i in range(5)]  # five event ids
    for clock in clocks:
        await notifier.publish(notices.event(Kind.NOTICE, HW, recipient=who, booking_id=booking, clock=clock))

    async def settled() -> bool:
        return notifier.runtime.consumer.stats["handled"] >= 5

    await eventually(settled, timeout=20, what="five events handled")
    await one_mail(mailpit, who.email)
    record = await notifier.service.deliveries.get(f"{booking}/notice/v1")
    assert record is not None and record["state"] == "sent"


async def test_a_reconfirmed_appointment_is_a_new_email(notifier: Notifier, mailpit: Mailpit) -> None:
    who, booking = person("v2"), unique("b-")
    await notifier.publish(notices.event(Kind.CONFIRMATION, KG, recipient=who, booking_id=booking, version=1))
    await one_mail(mailpit, who.email)
    await notifier.publish(notices.event(Kind.CONFIRMATION, KG, recipient=who, booking_id=booking, version=2))
    both = await eventually(lambda: _at_least(mailpit, who.email, 2), what="second confirmation")
    assert len({m["MessageID"] for m in both}) == 2


async def _at_least(mailpit: Mailpit, address: str, n: int) -> list[dict[str, Any]]:
    found = await mailpit.to(address)
    return found if len(found) >= n else []


async def test_crash_after_smtp_accepted_resends_with_the_same_message_id_after_the_lease(
    make_settings: Callable[..., Settings], mailpit: Mailpit
) -> None:
    """The documented window: accepted by SMTP, then the process died before marking the record.

    The record stays `claimed`; while its lease runs, redeliveries wait (retry). After the lease the
    notice is sent again with the SAME Message-ID: Mailpit then holds two copies that a receiver
    recognises as one message (same Message-ID). Nothing is ever lost.
    """
    clock = FixedClock(notices.NOW)
    async with running(make_settings(Settings), clock=clock) as n:
        who = person("crash")
        event = notices.event(Kind.CONFIRMATION, KG, recipient=who)
        notice = plan(event, KG)
        assert notice is not None
        service = n.service
        # What the crashed worker did: claim, compose, send — and never mark.
        claim = await service.deliveries.claim(notice, message_id(notice.key, "consult.example.org"), "x")
        assert isinstance(claim, Claim)
        await service.mailer.send(
            service.composer.compose(notice, KG, message_id=claim.message_id, now=clock.now())
        )
        first = await one_mail(mailpit, who.email)

        await n.publish(event)  # the broker redelivers the event the crashed worker never acked

        async def retried() -> bool:
            return n.runtime.consumer.stats["retried"] >= 1

        await eventually(retried, what="redelivery waiting for the lease")
        assert len(await mailpit.to(who.email)) == 1  # lease still running: nothing sent

        clock.advance(timedelta(seconds=service.settings.delivery_lease_seconds + 1))
        both = await eventually(lambda: _at_least(mailpit, who.email, 2), timeout=20, what="resend")
        assert {m["MessageID"] for m in both} == {first["MessageID"]}  # recognisably the same message
        await eventually(lambda: _state(service, notice.key, "sent"), what="record marked sent")
        record = await service.deliveries.get(notice.key)
        assert record is not None and record["attempts"] == 2
        sent = await n.wait_events("notification.sent")
        assert sent[0]["payload"]["message_id"] == f"<{first['MessageID']}>"

        await n.publish(notices.event(Kind.CONFIRMATION, KG, recipient=who, booking_id=notice.booking_id))
        await eventually(lambda: _handled(n, 2), what="later duplicate handled")
        assert len(await mailpit.to(who.email)) == 2  # and nothing after that


async def _state(service: DeliveryService, key: str, state: str) -> bool:
    doc = await service.deliveries.get(key)
    return doc is not None and doc["state"] == state


async def _handled(n: Notifier, count: int) -> bool:
    return n.runtime.consumer.stats["handled"] >= count


# --------------------------------------------------------------------------- refused before SMTP


async def test_header_injection_is_parked_at_once_and_sends_nothing(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    """The event contract refuses CR/LF in the recipient (shared/text.py): the event is parked as
    invalid before any mail is composed (the composer's own check stays, tests/unit)."""
    victim = f"{unique('victim-')}@example.org"
    evil = Recipient.model_construct(name=f"山田\r\nBcc: {victim}", email=f"{unique('inj-')}@example.org")
    await notifier.publish(notices.event(Kind.CONFIRMATION, KG, recipient=evil))
    parked = await eventually(notifier.parked, what="parked message")
    assert parked[0].headers[topology.REASON_HEADER] == "invalid-event"
    assert "U+000D" in str(parked[0].headers[topology.DETAIL_HEADER])
    assert topology.ATTEMPT_HEADER not in parked[0].headers
    assert await mailpit.to(victim) == []
    assert await mailpit.to(evil.email) == []


async def test_an_invalid_address_is_parked_once_even_when_the_event_comes_again(notifier: Notifier) -> None:
    event = notices.event(Kind.NOTICE, HW, recipient=Recipient(name="x", email="not-an-address"))
    await notifier.publish(event)
    parked = await eventually(notifier.parked, what="parked message")
    assert parked[0].headers[topology.REASON_HEADER] == "invalid-address"
    await notifier.wait_events("notification.failed")
    await notifier.publish(event)  # a replay or duplicate: already failed for good, nothing new

    async def handled() -> bool:
        return notifier.runtime.consumer.stats["handled"] >= 1

    await eventually(handled, what="duplicate settled quietly")
    await notifier.quiet()  # nothing more on its way out
    assert await notifier.parked() == []
    assert len(notifier.events("notification.failed")) == 1


async def test_an_event_of_an_unknown_office_is_parked(notifier: Notifier) -> None:
    stranger = KG.model_copy(update={"office_id": "nowhere"})
    await notifier.publish(notices.event(Kind.CONFIRMATION, stranger))
    parked = await eventually(notifier.parked, what="parked message")
    assert parked[0].headers[topology.REASON_HEADER] == "unknown-office"


# --------------------------------------------------------------------------- a third office


async def test_a_third_office_added_as_a_policy_file_gets_its_emails_from_the_generic_templates(
    make_settings: Callable[..., Settings], mailpit: Mailpit, tmp_path: Path
) -> None:
    source = (ROOT / "deploy" / "offices" / "kohoku-hellowork.yaml").read_text(encoding="utf-8")
    third = (
        source.replace("office_id: kohoku-hellowork", "office_id: naha-test-office")
        .replace("name: 港北公共職業安定所", "name: 那覇テスト職業相談所")
        .replace('phone: "045-000-0000"', 'phone: "098-000-0000"')
        .replace("subject: オンライン職業相談", "subject: 【那覇】オンライン相談のご案内")
    )
    (tmp_path / "naha-test-office.yaml").write_text(third, encoding="utf-8")
    settings = make_settings(Settings, extra_offices_dir=tmp_path)
    policy = settings.policies()["naha-test-office"]
    async with running(settings) as n:
        who = person("third")
        await n.publish(notices.event(Kind.NOTICE, policy, recipient=who))
        msg = await one_mail(mailpit, who.email)
    assert msg["Subject"] == "【那覇】オンライン相談のご案内"
    assert "那覇テスト職業相談所です。" in msg["Text"]  # the generic greeting, not HW's own
    assert "電話（098-000-0000）のみでご連絡ください" in msg["Text"]
    assert WHEN in msg["Text"]


# --------------------------------------------------------------------------- ops


async def test_consultctl_notifier_deliveries_lists_the_records_of_a_booking(
    make_settings: Callable[..., Settings], mailpit: Mailpit, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(Settings)
    booking = unique("b-")
    async with running(settings) as n:
        who = person("cli")
        await n.publish(notices.event(Kind.CONFIRMATION, KG, recipient=who, booking_id=booking))
        await one_mail(mailpit, who.email)
        await eventually(lambda: _state(n.service, f"{booking}/confirmation/v1", "sent"), what="marked")
    monkeypatch.setenv("MONGODB_URL", settings.mongodb_url)
    monkeypatch.setenv("DB_PREFIX", settings.db_prefix)
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["notifier", "deliveries", booking], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert f"{booking}/confirmation/v1" in result.output
    assert "sent" in result.output


async def test_a_delivery_cancelled_mid_send_still_marks_what_the_server_accepted(
    notifier: Notifier, mailpit: Mailpit
) -> None:
    """The chaos run's duplicate: a broker drop cancelled a handler between SMTP's acceptance and the
    mark, so the lease ran out and the notice went again. Cancelled at every point of the path, a
    delivery whose email arrived is marked sent (and its redelivery sends nothing)."""
    people = [person(f"cancel{i}") for i in range(24)]
    for i, who in enumerate(people):
        event = notices.event(Kind.CONFIRMATION, KG, recipient=who, booking_id=unique("b-"))
        task = asyncio.create_task(notifier.service.handle(event))
        await asyncio.sleep(i * 0.004)  # 0–92 ms: before the claim, during the send, around the mark
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await _delivery_finished(notifier, event)  # a shielded delivery finishes on its own
        notice = plan(event, KG)
        assert notice is not None
        if await mailpit.to(who.email):  # the server accepted it: the shielded delivery marks it
            marked = functools.partial(_state, notifier.service, notice.key, "sent")
            await eventually(marked, what=f"delivery {i} marked sent")
        await notifier.service.handle(event)  # the redelivery
        assert len(await eventually(_mails_to(mailpit, who.email), what="the mail")) == 1


async def _delivery_finished(notifier: Notifier, event: Envelope[Any]) -> None:
    async def finished() -> bool:
        return not notifier.runtime.running_tasks(f"deliver {event.event_id}")

    await eventually(finished, timeout=60, what=f"the delivery of {event.event_id} finished")


def _mails_to(mailpit: Mailpit, address: str) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    async def probe() -> list[dict[str, Any]]:
        return await mailpit.to(address)

    return probe
