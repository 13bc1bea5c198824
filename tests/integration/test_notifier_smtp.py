"""The notifier against its OWN Mailpit (free ports, own database), which these tests stop, restart,
make refuse, or put behind STARTTLS and a login, without disturbing anyone else's tests."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import ipaddress
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from examples import notices
from services.notifier import smtp as smtp_module
from services.notifier.compose import Composer
from services.notifier.config import Settings
from services.notifier.domain import Kind, message_id, plan
from services.notifier.smtp import Mailer, SmtpFailure
from services.notifier.store import Claim
from shared import topology
from shared.clock import FixedClock
from shared.events import Recipient
from tests.integration.test_notifier_delivery import HW, KG, running
from tests.support import Mailpit, eventually, free_port, unique

MAILPIT_BIN = Path(__file__).resolve().parents[2] / ".local" / "bin" / "mailpit"


class OwnMailpit:
    """A Mailpit process of this test only; kill() and start() keep its ports and its database."""

    def __init__(self, data: Path, *args: str) -> None:
        if not MAILPIT_BIN.exists():
            pytest.fail(f"{MAILPIT_BIN} missing: run `make infra-up` once to build it")
        self.smtp_port, self.http_port = free_port(), free_port()
        self.data, self.args = data, args
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = Mailpit(f"http://127.0.0.1:{self.http_port}/api/v1")
        self.smtp_url = f"smtp://127.0.0.1:{self.smtp_port}"

    def start(self) -> None:
        log = (self.data / "mailpit.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(MAILPIT_BIN),
                "--smtp",
                f"127.0.0.1:{self.smtp_port}",
                "--listen",
                f"127.0.0.1:{self.http_port}",
                "--database",
                str(self.data / "m.db"),
                "--max",
                "0",
                "--disable-version-check",
                "--smtp-disable-rdns",
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    async def ready(self) -> None:
        async def answers() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as c:
                    r = await c.get(f"http://127.0.0.1:{self.http_port}/readyz")
                with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=2):
                    return r.status_code == 200
            except (OSError, httpx.HTTPError):
                return False

        await eventually(answers, timeout=20, what="own Mailpit ready")

    async def chaos(self, recipient_code: int, probability: int) -> None:
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.put(
                f"http://127.0.0.1:{self.http_port}/api/v1/chaos",
                json={"Recipient": {"ErrorCode": recipient_code, "Probability": probability}},
            )
            r.raise_for_status()

    async def count(self) -> int:
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(f"http://127.0.0.1:{self.http_port}/api/v1/messages", params={"limit": 1})
            return int(r.json()["total"])


@pytest.fixture
async def own_mailpit(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[OwnMailpit] = []

    async def start(*args: str) -> OwnMailpit:
        mp = OwnMailpit(tmp_path, *args)
        mp.start()
        started.append(mp)
        await mp.ready()
        return mp

    yield start
    for mp in started:
        mp.kill()


def person(prefix: str) -> Recipient:
    return Recipient(name="山田 太郎", email=f"{unique(prefix + '-')}@example.org")


async def exactly_one_each(mailpit: Mailpit, people: list[Recipient]) -> dict[str, str]:
    """Wait until every address has mail; then each must have exactly one. Returns Message-IDs."""
    ids: dict[str, str] = {}
    for p in people:
        found = await eventually(partial(mailpit.to, p.email), timeout=90, what=f"mail to {p.email}")
        assert len(found) == 1, f"{p.email}: {len(found)} emails"
        ids[p.email] = found[0]["MessageID"]
    return ids


def mixed_event(i: int, who: Recipient) -> Any:
    kind, policy = [(Kind.CONFIRMATION, KG), (Kind.NOTICE, HW), (Kind.CANCELLATION, KG)][i % 3]
    return notices.event(kind, policy, recipient=who)


# --------------------------------------------------------------------------- outage


@pytest.mark.slow
async def test_smtp_stopped_for_30_seconds_then_restarted_delivers_every_email_once(
    make_settings: Callable[..., Settings], own_mailpit: Callable[..., Any]
) -> None:
    mp: OwnMailpit = await own_mailpit()
    async with running(make_settings(Settings, smtp_url=mp.smtp_url)) as n:
        before = [person("before") for _ in range(5)]
        first_events = [mixed_event(i, who) for i, who in enumerate(before)]
        for e in first_events:
            await n.publish(e)
        await exactly_one_each(mp.api, before)

        mp.kill()
        stopped = time.monotonic()
        during = [person("during") for _ in range(10)]
        for i, who in enumerate(during):
            await n.publish(mixed_event(i, who))
        await n.publish(first_events[0])  # a duplicate arriving during the outage: settled, not sent

        async def all_failed_once() -> bool:
            return n.runtime.consumer.stats["retried"] >= len(during)

        await eventually(all_failed_once, timeout=20, what="every send failed and was scheduled again")
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        mp.start()
        await mp.ready()

        ids = await exactly_one_each(mp.api, before + during)
        assert len(set(ids.values())) == 15
        await n.wait_events("notification.sent", 15)
        await n.quiet()
        assert len(n.events("notification.sent")) == 15
        assert n.events("notification.failed") == []
        assert await mp.count() == 15


# --------------------------------------------------------------------------- refusals by the server


async def test_a_5xx_recipient_refusal_is_reported_as_permanent_and_parked(
    make_settings: Callable[..., Settings], own_mailpit: Callable[..., Any]
) -> None:
    mp: OwnMailpit = await own_mailpit("--smtp-allowed-recipients", "^ok-")
    async with running(make_settings(Settings, smtp_url=mp.smtp_url)) as n:
        refused, fine = person("gone"), person("ok")
        await n.publish(notices.event(Kind.NOTICE, HW, recipient=refused))
        await n.publish(notices.event(Kind.NOTICE, HW, recipient=fine))
        failed = await n.wait_events("notification.failed")
        assert failed[0]["payload"]["permanent"] is True
        assert "550" in failed[0]["payload"]["error"]
        parked = await eventually(n.parked, what="parked message")
        assert parked[0].headers[topology.REASON_HEADER] == "smtp-rejected"
        await exactly_one_each(mp.api, [fine])
        assert await mp.api.to(refused.email) == []


async def test_a_4xx_is_retried_with_backoff_until_the_server_accepts(
    make_settings: Callable[..., Settings], own_mailpit: Callable[..., Any]
) -> None:
    mp: OwnMailpit = await own_mailpit("--enable-chaos")
    async with running(make_settings(Settings, smtp_url=mp.smtp_url)) as n:
        await mp.chaos(451, 100)
        who = person("busy")
        await n.publish(notices.event(Kind.CONFIRMATION, KG, recipient=who))

        async def retried() -> bool:
            return n.runtime.consumer.stats["retried"] >= 1

        await eventually(retried, what="a 451 scheduled for retry")
        await mp.chaos(451, 0)
        await exactly_one_each(mp.api, [who])
        assert n.events("notification.failed") == []


async def test_smtp_unavailable_past_every_retry_is_reported_parked_and_delivered_on_replay(
    make_settings: Callable[..., Settings], own_mailpit: Callable[..., Any]
) -> None:
    mp: OwnMailpit = await own_mailpit("--enable-chaos")
    short = topology.ServiceQueues("notifier", events=topology.NOTIFIER.events, retry_delays=(1, 1))
    async with running(make_settings(Settings, smtp_url=mp.smtp_url), queues=short) as n:
        await mp.chaos(451, 100)
        who = person("down")
        event = notices.event(Kind.NOTICE, HW, recipient=who)
        await n.publish(event)
        failed = await n.wait_events("notification.failed")
        assert failed[0]["payload"]["permanent"] is False
        parked = await eventually(n.parked, what="parked message")
        assert parked[0].headers[topology.REASON_HEADER] == "smtp-unavailable"

        await mp.chaos(451, 0)
        await n.publish(event)  # ops replay the parked message once the server is back
        await exactly_one_each(mp.api, [who])
        await n.wait_events("notification.sent")


# --------------------------------------------------------------------------- the crash window, at a receiver


async def _claimed(svc: Any, who: str) -> tuple[Any, Any, Claim]:
    """A KG confirmation for a new person, planned and claimed (as a worker would, before SMTP)."""
    event = notices.event(Kind.CONFIRMATION, KG, recipient=person(who))
    notice = plan(event, KG)
    assert notice is not None
    claim = await svc.deliveries.claim(notice, message_id(notice.key, svc.settings.mail_domain), "x")
    assert isinstance(claim, Claim)
    return event, notice, claim


async def test_a_receiver_deduping_by_message_id_keeps_one_copy_of_a_crash_resend(
    make_settings: Callable[..., Settings], own_mailpit: Callable[..., Any]
) -> None:
    """Crash after SMTP accepted, before the mark: the resend carries the same Message-ID, so a
    receiver that dedupes on it (here Mailpit with --ignore-duplicate-ids) shows the person one email."""
    mp: OwnMailpit = await own_mailpit("--ignore-duplicate-ids")
    clock = FixedClock(notices.NOW)
    async with running(make_settings(Settings, smtp_url=mp.smtp_url), clock=clock) as n:
        svc = n.service
        event, notice, claim = await _claimed(svc, "dedupe")
        await svc.mailer.send(svc.composer.compose(notice, KG, message_id=claim.message_id, now=clock.now()))
        clock.advance(timedelta(seconds=svc.settings.delivery_lease_seconds + 1))  # the lease has run out
        await n.publish(event)

        async def marked() -> bool:
            doc = await svc.deliveries.get(notice.key)
            return doc is not None and doc["state"] == "sent"

        await eventually(marked, what="resent and marked")
        record = await svc.deliveries.get(notice.key)
        assert record is not None and record["attempts"] == 2  # it was sent a second time
        resumed = n.runtime.metrics.get_sample_value(
            "consult_notifier_emails_total", {"kind": "confirmation", "outcome": "resumed"}
        )
        assert resumed == 1.0
        # the resend is counted as ambiguous, on /metrics and on the record
        ambiguous = n.runtime.metrics.get_sample_value(
            "consult_notifier_ambiguous_resends_total", {"kind": "confirmation"}
        )
        assert ambiguous == 1.0
        assert record["ambiguous_resends"] == 1
    assert await mp.count() == 1  # ... and the receiver kept one


async def test_a_crash_after_the_acceptance_was_recorded_settles_the_record_without_sending_again(
    make_settings: Callable[..., Settings], own_mailpit: Callable[..., Any]
) -> None:
    """Accepted, the acceptance recorded right after the 250 (before QUIT), then the process died
    before the full mark: the take-over finds the acceptance, marks the record sent and sends nothing."""
    mp: OwnMailpit = await own_mailpit()
    clock = FixedClock(notices.NOW)
    async with running(make_settings(Settings, smtp_url=mp.smtp_url), clock=clock) as n:
        svc = n.service
        event, notice, claim = await _claimed(svc, "recorded")

        async def record(accepted: Any) -> None:
            await svc.deliveries.record_accepted(claim, accepted.response)

        message = svc.composer.compose(notice, KG, message_id=claim.message_id, now=clock.now())
        await svc.mailer.send(message, on_accepted=record)  # ... and the worker died here
        clock.advance(timedelta(seconds=svc.settings.delivery_lease_seconds + 1))
        await n.publish(event)
        sent = await n.wait_events("notification.sent")
        assert sent[0]["payload"]["message_id"] == claim.message_id
        doc = await svc.deliveries.get(notice.key)
        assert doc is not None and doc["state"] == "sent" and "ambiguous_resends" not in doc
        metric = n.runtime.metrics.get_sample_value
        assert metric("consult_notifier_emails_total", {"kind": "confirmation", "outcome": "recovered"}) == 1
        assert metric("consult_notifier_ambiguous_resends_total", {"kind": "confirmation"}) is None
    assert await mp.count() == 1


async def test_a_connection_lost_once_the_body_went_out_makes_the_next_attempt_an_ambiguous_resend(
    make_settings: Callable[..., Settings], own_mailpit: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server dies while the data is on its way: it may have taken the message, so the failure is
    ambiguous, and the attempt that follows is counted as an ambiguous resend. A server that is not
    there at all is a plain transient failure."""
    mp: OwnMailpit = await own_mailpit()
    settings = make_settings(Settings, smtp_url=mp.smtp_url, smtp_timeout=2.0)
    original = smtp_module._Session.data

    async def server_dies_during_data(self: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
        mp.kill()
        return await original(self, message, *args, **kwargs)

    monkeypatch.setattr(smtp_module._Session, "data", server_dies_during_data)
    with pytest.raises(SmtpFailure) as lost:
        await Mailer(settings).send(_message(settings))
    assert lost.value.ambiguous and not lost.value.permanent
    with pytest.raises(SmtpFailure) as refused:  # nothing listens: the body never went out
        await Mailer(settings).send(_message(settings))
    assert not refused.value.ambiguous

    clock = FixedClock(notices.NOW)
    async with running(settings, clock=clock) as n:
        deliveries = n.service.deliveries
        for ambiguous in (True, False):
            notice = plan(notices.event(Kind.CONFIRMATION, KG, recipient=person("lost")), KG)
            assert notice is not None
            first = await deliveries.claim(notice, message_id(notice.key, settings.mail_domain), "x")
            assert isinstance(first, Claim)
            await deliveries.release(first, "SMTPServerDisconnected", ambiguous=ambiguous)
            second = await deliveries.claim(notice, first.message_id, "x")
            assert isinstance(second, Claim) and second.attempt == 2
            assert second.resumed is ambiguous and second.message_id == first.message_id


# --------------------------------------------------------------------------- TLS and login


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A self-signed certificate for 127.0.0.1 and a Mailpit password file (notifier / s3cret)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    files = {"cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem", "auth": tmp_path / "auth"}
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    sha = base64.b64encode(hashlib.sha1(b"s3cret").digest()).decode()
    files["auth"].write_text(f"notifier:{{SHA}}{sha}\n")
    return files


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
async def test_tls_and_login_from_smtp_url(
    make_settings: Callable[..., Settings],
    own_mailpit: Callable[..., Any],
    tls_files: dict[str, Path],
    mode: str,
) -> None:
    tls = ["--smtp-tls-cert", str(tls_files["cert"]), "--smtp-tls-key", str(tls_files["key"])]
    require = "--smtp-require-starttls" if mode == "starttls" else "--smtp-require-tls"
    mp: OwnMailpit = await own_mailpit(*tls, require, "--smtp-auth-file", str(tls_files["auth"]))
    scheme = "smtp" if mode == "starttls" else "smtps"
    settings = make_settings(
        Settings,
        smtp_url=f"{scheme}://notifier:s3cret@127.0.0.1:{mp.smtp_port}",
        smtp_starttls=True if mode == "starttls" else None,
        smtp_ca_file=tls_files["cert"],
    )
    async with running(settings) as n:
        who = person(mode)
        await n.publish(notices.event(Kind.CONFIRMATION, KG, recipient=who))
        await exactly_one_each(mp.api, [who])
        found = await mp.api.to(who.email)
        assert found[0]["Username"] == "notifier"  # logged in


def _message(settings: Settings) -> Any:
    planned = plan(notices.event(Kind.CONFIRMATION, KG), KG)
    assert planned is not None
    return Composer(settings.mail_from).compose(planned, KG, message_id="<x@y.org>", now=notices.NOW)


async def test_a_rejected_login_is_transient_not_the_messages_fault(
    make_settings: Callable[..., Settings], own_mailpit: Callable[..., Any], tls_files: dict[str, Path]
) -> None:
    tls = ["--smtp-tls-cert", str(tls_files["cert"]), "--smtp-tls-key", str(tls_files["key"])]
    mp: OwnMailpit = await own_mailpit(*tls, "--smtp-auth-file", str(tls_files["auth"]))
    settings = make_settings(
        Settings,
        smtp_url=f"smtp://notifier:wrong@127.0.0.1:{mp.smtp_port}",
        smtp_starttls=True,
        smtp_ca_file=tls_files["cert"],
    )
    with pytest.raises(SmtpFailure) as caught:
        await Mailer(settings).send(_message(settings))
    assert caught.value.permanent is False
    assert caught.value.code == 535
    assert await mp.count() == 0


async def test_starttls_required_but_not_offered_sends_nothing_in_clear(
    make_settings: Callable[..., Settings], own_mailpit: Callable[..., Any]
) -> None:
    mp: OwnMailpit = await own_mailpit()  # no certificate: no STARTTLS offered
    settings = make_settings(
        Settings, smtp_url=f"smtp://notifier:pw@127.0.0.1:{mp.smtp_port}", smtp_starttls=True
    )
    with pytest.raises(SmtpFailure) as caught:
        await Mailer(settings).send(_message(settings))
    assert caught.value.permanent is False  # configuration, not the message: retried, then parked
    assert await mp.count() == 0


# --------------------------------------------------------------------------- throughput


async def test_throughput_through_mailpit(
    make_settings: Callable[..., Settings],
    own_mailpit: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not a speed assertion: measures emails/s end to end (event in, SMTP accepted, record marked).

    The notification.sent events follow through the shared outbox relay at its own pace.
    """
    mp: OwnMailpit = await own_mailpit()
    count = 150
    async with running(make_settings(Settings, smtp_url=mp.smtp_url)) as n:
        events = [mixed_event(i, person(f"tp{i}")) for i in range(count)]
        started = time.perf_counter()
        for e in events:
            await n.publish(e)

        async def all_marked() -> bool:
            return await n.service.deliveries.collection.count_documents({"state": "sent"}) >= count

        await eventually(all_marked, timeout=120, interval=0.2, what=f"{count} deliveries marked sent")
        elapsed = time.perf_counter() - started
    assert await mp.count() == count
    with capsys.disabled():
        print(f"\nnotifier throughput: {count} emails in {elapsed:.2f}s = {count / elapsed:.1f} emails/s")
