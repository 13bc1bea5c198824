"""The notifier as a real process in the stack: an event on the bus becomes an email a person can read."""

from __future__ import annotations

from typing import Any

import aio_pika

from examples import notices
from services.notifier.domain import Kind
from services.notifier.preview import format_message
from shared import topology
from shared.events import Envelope, Recipient
from shared.settings import ServiceSettings
from tests.support import Mailpit, eventually, unique
from tests.support.stack import Stack

POLICIES = ServiceSettings().policies()


async def _publish(stack: Stack, event: Envelope[Any]) -> None:
    conn = await aio_pika.connect(stack.amqp_url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        ex = await ch.get_exchange(topology.EVENTS)
        await ex.publish(
            aio_pika.Message(event.to_json(), delivery_mode=2, message_id=str(event.event_id)),
            routing_key=event.type,
            mandatory=True,
        )


async def test_r06_hw_notice_event_reaches_the_person_as_a_readable_email(stack: Stack) -> None:
    hw = POLICIES["kohoku-hellowork"]
    who = Recipient(name="港北 花子", email=f"{unique('e2e-hw-')}@example.org")
    await _publish(stack, notices.event(Kind.NOTICE, hw, recipient=who))
    mailpit = Mailpit()
    found = await eventually(lambda: mailpit.to(who.email), timeout=30, what="the notice in Mailpit")
    assert len(found) == 1
    shown = format_message(await mailpit.message(found[0]["ID"]))
    assert "件名    : オンライン職業相談" in shown
    assert "港北 花子 様" in shown
    assert "2026年11月25日(水) 10:00〜10:30" in shown
    assert notices.join_url_base(hw) in shown


async def test_notifier_metrics_count_sent_emails(stack: Stack) -> None:
    kg = POLICIES["kushiro-gyosei"]
    who = Recipient(name="釧路 一郎", email=f"{unique('e2e-kg-')}@example.org")
    await _publish(stack, notices.event(Kind.CONFIRMATION, kg, recipient=who))
    await eventually(lambda: Mailpit().to(who.email), timeout=30, what="the confirmation in Mailpit")
    async with stack.client("notifier") as c:
        text = (await c.get("/metrics/")).text
    assert 'consult_notifier_emails_total{kind="confirmation",outcome="sent"}' in text
