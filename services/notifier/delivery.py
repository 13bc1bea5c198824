"""One notice, delivered once in effect: plan → claim → compose → SMTP → mark (with its event).

Exactly-once in effect rests on the delivery record (store.py), not on the event: whatever event id
brings a notice, its key is claimed first, and a notice already sent is not sent again. The server's
acceptance is recorded by one insert right after its `250`, before QUIT (`consult_notifier_accept_to_
mark_seconds` measures that window); the full mark follows. The one window left: the process died
between the `250` and that insert (or the connection dropped after the body went out, before any
answer). The claim then stays unmarked until its lease ends; the next delivery of the event takes it
over and sends again with the SAME Message-ID, logged with its delivery key and counted
(`consult_notifier_ambiguous_resends_total`, and `ambiguous_resends` on the record), so the receiver
(and Mailpit, and a person's mail client threading) can tell the second copy for what it is. Closing
the window entirely would need the SMTP server to dedupe by Message-ID, which the protocol does not
promise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from pymongo.errors import PyMongoError

from services.notifier.agenda import AgendaJob, CounsellorDays
from services.notifier.compose import Composer
from services.notifier.config import Settings
from services.notifier.domain import Notice, message_id, plan_all
from services.notifier.smtp import Accepted, Mailer, SmtpFailure
from services.notifier.store import Busy, Claim, Deliveries, Settled
from shared.events import Envelope, MessageError, NotificationFailed, NotificationSent
from shared.logsafe import redact_text
from shared.messaging import TransientError
from shared.policy import Policies
from shared.runtime import Runtime
from shared.store.outbox import OutboxRelay
from shared.text import PROSE_ALLOWED, shown

log = logging.getLogger("consult.notifier")
T = TypeVar("T")


class DeliveryService:
    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.policies: Policies = settings.policies()
        self.composer = Composer(settings.mail_from)
        self.mailer = Mailer(settings)
        collection = runtime.db["deliveries"]
        self.deliveries = Deliveries(
            collection, runtime.clock, timedelta(seconds=settings.delivery_lease_seconds)
        )
        self.relay: OutboxRelay = runtime.marked_relay(collection)
        # The shared consumer parks after the last delay; this is the attempt on which we give up
        # ourselves, so that a notification.failed goes to the audit store with the parked message.
        self.max_attempts = len(runtime.queues.retry_delays) + 1
        self.metrics = _Metrics(runtime.metrics)
        runtime.on_startup(self.deliveries.ensure_indexes)
        # The counsellors' agenda (office policy counsellor_agenda): kept from the events, sent by a job
        self.agenda_days = CounsellorDays(runtime.db, runtime.sealer)
        self.agenda = AgendaJob(
            self.send_standalone, self.agenda_days, self.policies, runtime.clock, settings.agenda_poll_seconds
        )
        runtime.on_startup(self._start_agenda)
        runtime.on_shutdown(self._stop_agenda)

    async def _start_agenda(self) -> None:
        if self.agenda.offices():
            self.runtime.spawn(self.agenda.run(), name="counsellor agenda")

    async def _stop_agenda(self) -> None:
        self.agenda.stop()

    async def handle(self, event: Envelope[Any]) -> None:
        """Claim, send and mark run to the end even if this delivery is cancelled (the broker
        connection dropped, shutdown). A cancel between the server's acceptance and the mark would
        leave the claim unmarked, and the notice would go out twice when its lease ends; one right
        after the claim would hold the notice back for a whole lease. The redelivery finds the record
        settled (or released, if the send failed) and acts on that."""
        # spawned, so that a shutdown waits for a delivery whose consumer was cancelled
        task = self.runtime.spawn(self._handle(event), name=f"deliver {event.event_id}")
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_orphaned_failure)
            raise

    async def _handle(self, event: Envelope[Any]) -> None:
        policy = self.policies.get(event.office_id)
        if policy is None:
            raise MessageError("unknown-office", f"no policy for office {event.office_id!r}")
        notices = plan_all(event, policy)
        if not notices:
            self.metrics.outcome(event.type, "not-sent")
            log.info("%s for %s calls for no email (policy)", event.type, event.office_id)
        # One event, several emails (the person's, the counsellors'), each with its own delivery key
        # and record: each is tried, whatever became of the others. Then the event is retried if any
        # failed for now (those already sent are settled duplicates next time), and parked with the
        # reason of a permanent failure only when nothing is left to retry.
        failures: list[TransientError | MessageError] = []
        for notice in notices:
            try:
                await self._send(event, notice)
            except (TransientError, MessageError) as exc:
                failures.append(exc)
        # Then the counsellors' agenda (idempotent by appointment version), whatever became of the
        # emails: a fault of its own retries the event, whose emails are settled duplicates by then.
        await self.agenda_days.record(event, policy)
        if failures:
            raise next((f for f in failures if isinstance(f, TransientError)), failures[0])

    async def send_standalone(self, notice: Notice) -> None:
        """A notice no event brings (the counsellors' agenda, sent by the job): claimed, sent and
        marked like every other. A record that failed is left for ops, not retried by each tick; a
        claim held by another replica is theirs. Like `handle`, it runs to the end once started."""
        record = await self.deliveries.get(notice.key)
        if record is not None and record.get("state") in ("sent", "failed"):
            return
        task = self.runtime.spawn(self._send(None, notice), name=f"deliver {notice.key}")
        try:
            await asyncio.shield(task)
        except TransientError as exc:  # the next tick tries again (within the day's window)
            log.info("%s not sent this time: %s", notice.key, exc)
        except MessageError as exc:  # recorded failed, notification.failed sent: for ops
            log.warning("%s failed: %s", notice.key, exc)

    async def _send(self, event: Envelope[Any] | None, notice: Notice) -> None:
        """Claim, then send unless it went out already; `event` is the cause, if an event brought it."""
        mid = message_id(notice.key, self.settings.mail_domain)
        claim = await self.deliveries.claim(notice, mid, str(event.event_id) if event else "job")
        if isinstance(claim, Settled):
            self.metrics.outcome(notice.kind, "duplicate")
            log.info("%s already %s; nothing sent again", notice.key, claim.state)
            return
        if isinstance(claim, Busy):
            raise TransientError(f"{notice.key} is being sent by another worker (lease {claim.lease_until})")
        if claim.resumed:
            earlier = await self.deliveries.accepted(notice.key)
            if earlier is not None:  # accepted, then the process died before the full mark
                await self._settle(event, notice, claim, str(earlier.get("smtp_response", "")))
                self.metrics.outcome(notice.kind, "recovered")
                log.info("%s: an earlier attempt was accepted; recorded now, not sent again", notice.key)
                return
            await self.deliveries.count_ambiguous_resend(claim)
            self.metrics.ambiguous_resends.labels(kind=str(notice.kind)).inc()
            self.metrics.outcome(notice.kind, "resumed")
            log.warning(
                "%s: ambiguous resend (attempt %d): an earlier attempt may have reached the server; "
                "sending again as %s",
                notice.key,
                claim.attempt,
                claim.message_id,
            )
        await self._deliver(event, notice, claim)

    async def _deliver(self, event: Envelope[Any] | None, notice: Notice, claim: Claim) -> None:
        policy = self.policies[notice.office_id]
        try:
            message = self.composer.compose(
                notice, policy, message_id=claim.message_id, now=self.runtime.clock.now()
            )
        except MessageError as exc:
            # A template bug is ours to fix (then replay); a bad address or header stays failed.
            await self._fail(event, notice, claim, str(exc), permanent=exc.reason != "template-error")
            raise
        give_up = asyncio.get_running_loop().time() + self.settings.delivery_lease_seconds / 2

        async def record(accepted: Accepted) -> None:  # before QUIT: the window a crash can hit
            t0 = time.perf_counter()
            await self._persist(claim, give_up, self.deliveries.record_accepted, claim, accepted.response)
            self.metrics.accept_to_mark.observe(time.perf_counter() - t0)

        try:
            accepted = await self.mailer.send(message, on_accepted=record)
        except SmtpFailure as exc:
            await self._smtp_failed(event, notice, claim, exc)
            return
        self.metrics.smtp_seconds.observe(accepted.seconds)
        await self._settle(event, notice, claim, accepted.response, give_up)
        self.metrics.outcome(notice.kind, "sent")

    async def _settle(
        self,
        event: Envelope[Any] | None,
        notice: Notice,
        claim: Claim,
        response: str,
        give_up: float | None = None,
    ) -> None:
        """The server accepted the email: the record says `sent` and carries notification.sent."""
        sent = self._event(
            NotificationSent(
                booking_id=notice.booking_id,
                kind=notice.kind.value,
                delivery_key=notice.key,
                message_id=claim.message_id,
                person_key=notice.person_key,
            ),
            notice,
            event,
        )
        if give_up is None:
            give_up = asyncio.get_running_loop().time() + self.settings.delivery_lease_seconds / 2
        if not await self._persist(claim, give_up, self.deliveries.mark_sent, claim, response, [sent]):
            log.warning("%s: claim was taken over while sending; the other attempt reports it", notice.key)
        self.relay.poke()

    async def _persist(
        self, claim: Claim, give_up: float, write: Callable[..., Awaitable[T]], *args: Any
    ) -> T:
        """After the server's acceptance: keep trying a write through a database outage (FerretDB
        paused in the chaos drill) while the claim's lease lasts, instead of leaving the claim
        unmarked for a resend. Every such write is idempotent (by `_id`, or by the claim's token)."""
        loop = asyncio.get_running_loop()
        pause = 0.5
        while True:
            try:
                return await write(*args)
            except PyMongoError as exc:
                if loop.time() + pause > give_up:
                    raise
                log.warning("%s: sent, but recording it failed (%s); again in %.1fs", claim.key, exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _smtp_failed(
        self, event: Envelope[Any] | None, notice: Notice, claim: Claim, exc: SmtpFailure
    ) -> None:
        if exc.permanent:
            await self._fail(event, notice, claim, str(exc), permanent=True)
            raise MessageError("smtp-rejected", str(exc)) from exc
        if claim.attempt >= self.max_attempts:
            await self._fail(event, notice, claim, str(exc), permanent=False)
            raise MessageError("smtp-unavailable", f"after {claim.attempt} attempts: {exc}") from exc
        await self.deliveries.release(claim, str(exc), ambiguous=exc.ambiguous)
        self.metrics.outcome(notice.kind, "retry")
        raise TransientError(f"SMTP attempt {claim.attempt} for {notice.key}: {exc}") from exc

    async def _fail(
        self, event: Envelope[Any] | None, notice: Notice, claim: Claim, error: str, *, permanent: bool
    ) -> None:
        error = redact_text(error)  # R12: the audit store gets the failure, not the address
        failed = self._event(
            NotificationFailed(
                booking_id=notice.booking_id,
                kind=notice.kind.value,
                delivery_key=notice.key,
                error=shown(error, 500, PROSE_ALLOWED),
                permanent=permanent,
                person_key=notice.person_key,
            ),
            notice,
            event,
        )
        await self.deliveries.mark_failed(claim, error, permanent, [failed])
        self.relay.poke()
        self.metrics.outcome(notice.kind, "failed" if permanent else "gave-up")

    def _event(
        self, payload: NotificationSent | NotificationFailed, notice: Notice, cause: Envelope[Any] | None
    ) -> Envelope[Any]:
        return self.runtime.event(payload, notice.office_id, cause=cause)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.emails = Counter(
            "consult_notifier_emails",
            "Notices by kind and outcome (sent, duplicate, retry, failed, gave-up, resumed, recovered, "
            "not-sent)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.smtp_seconds = Histogram(
            "consult_notifier_smtp_seconds",
            "Time for one SMTP send, connect to the server's acceptance",
            registry=registry,
        )
        self.accept_to_mark = Histogram(
            "consult_notifier_accept_to_mark_seconds",
            "From the SMTP server's 250 to the durable record of it: the window in which a crash "
            "makes the next attempt an ambiguous resend",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.ambiguous_resends = Counter(
            "consult_notifier_ambiguous_resends",
            "Notices sent again after an attempt that may have reached the server (same Message-ID)",
            ["kind"],
            registry=registry,
        )

    def outcome(self, kind: str, outcome: str) -> None:
        self.emails.labels(kind=str(kind), outcome=outcome).inc()


def _log_orphaned_failure(task: asyncio.Task[None]) -> None:
    """A shielded delivery whose caller was cancelled: nobody awaits its outcome, so log a failure."""
    exc = None if task.cancelled() else task.exception()
    if exc is not None and not isinstance(exc, TransientError | MessageError):  # those log themselves
        log.error("%s failed after its delivery was cancelled: %r", task.get_name(), exc)
