"""Portal intake: one handler for HTTP and AMQP requests, idempotent per (portal, key).

The first request with a key claims it (unique `_id`), decides, and records its answer; a repeat with the
same body gets that answer, with another body a 409. A refusal or invalid request is answered and also
published as `booking.rejected` (outbox of the request record), so AMQP portals and audit learn it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError, PyMongoError

from services.booking import rules
from services.booking.config import Settings
from services.booking.domain import Booking, Person, RuleViolation, Status, Window
from services.booking.ratelimit import Limited
from services.booking.service import BookingService
from services.booking.store.requests import request_key
from shared.commands import BookingForm, FieldError, booking_id_for, form_errors
from shared.events import BookingRejected, BookingRequested, DeviceRecorded, Envelope, Payload, TimeWindow
from shared.text import PROSE_ALLOWED, shown

log = logging.getLogger("consult.booking")
#: pauses between attempts of a decision the database failed (locked, restarting, timed out)
DB_RETRY_PAUSES = (0.2, 0.5, 1.0)


@dataclass(frozen=True)
class Outcome:
    """The answer to a request: HTTP status and JSON body (the same over AMQP, readable later)."""

    status: int
    body: dict[str, Any]

    @property
    def in_progress(self) -> bool:
        return self.body.get("error") == "in-progress"


@dataclass(frozen=True)
class Submission:
    portal_id: str
    office_id: str
    idempotency_key: str | None
    body: Any
    cause: Envelope[Any] | None = None  # the AMQP command, when it came that way
    extra: dict[str, Any] = field(default_factory=dict)


def accepted(booking: Booking) -> Outcome:
    body = {"booking_id": booking.booking_id, "status": booking.status.value, "office_id": booking.office_id}
    return Outcome(202, {**body, "request_id": booking.request_id})


def invalid(errors: list[FieldError]) -> Outcome:
    return Outcome(
        422,
        {
            "error": "invalid",
            "message": f"{len(errors)} field(s) to correct",
            "errors": [e.model_dump() for e in errors],
        },
    )


def refused(v: RuleViolation) -> Outcome:
    return Outcome(
        409, {"error": "refused", "rule": v.rule, "message": v.message, "field": v.field, **v.details}
    )


def body_hash(office_id: str, body: Any) -> str:
    canonical = json.dumps({"office_id": office_id, "body": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Intake:
    def __init__(self, service: BookingService, settings: Settings) -> None:
        self.service = service
        self.stores = service.stores
        self.wait = settings.idempotency_wait_seconds
        self.stale = timedelta(seconds=settings.claim_stale_seconds)

    async def submit(self, sub: Submission) -> Outcome:
        key = sub.idempotency_key or uuid.uuid4().hex
        booking_id = booking_id_for(sub.portal_id, key) if sub.idempotency_key else uuid.uuid4().hex
        legacy = body_hash(sub.office_id, sub.body)  # an unkeyed hash of the form: claims from before
        digest = self.stores.bookings.vault.index("request-body", legacy)  # keyed (R12)
        now = self.service.now
        claim = await self.stores.requests.claim(
            portal_id=sub.portal_id,
            idempotency_key=key,
            office_id=sub.office_id,
            body_hash=digest,
            booking_id=booking_id,
            now=now,
        )
        if claim.mine:
            return await self._decide_and_record(sub, key, booking_id, claim.doc["claimed_at"])
        if claim.doc["body_hash"] not in (digest, legacy):
            outcome = Outcome(
                409,
                {
                    "error": "idempotency-key-reused",
                    "message": "this Idempotency-Key was used with another body",
                },
            )
            if sub.cause is not None:  # AMQP: the portal learns it from booking.rejected
                event = self._rejected(sub, key, outcome)
                await self.stores.requests.record_refusal(str(sub.cause.event_id), sub.office_id, [event])
            return outcome
        return await self._answer_of(sub, key, claim.doc)

    async def reject_reused_message_id(self, sub: Submission) -> None:
        """An AMQP command with the message_id of another, different command: not a redelivered copy,
        so it is not dropped as one; its portal learns it from booking.rejected (request_id = its key)."""
        assert sub.cause is not None and sub.idempotency_key is not None
        outcome = Outcome(
            409,
            {
                "error": "message-id-reused",
                "message": f"message_id {sub.cause.event_id} was used by another command; "
                "send this one with a new message_id",
            },
        )
        event = self._rejected(sub, sub.idempotency_key, outcome)
        refusal_id = f"{sub.cause.event_id}\x1freused\x1f{sub.portal_id}\x1f{sub.idempotency_key}"
        await self.stores.requests.record_refusal(refusal_id, sub.office_id, [event])

    async def reject_limited(self, sub: Submission, limited: Limited) -> None:
        """An AMQP command over the portal's or the person's rate limit: refused like HTTP's 429 and
        told by booking.rejected; its idempotency key is not taken, so the portal sends it again later."""
        assert sub.cause is not None and sub.idempotency_key is not None
        outcome = Outcome(
            429,
            {
                "error": "rate-limited",
                "message": f"{limited.message}; send it again in {limited.retry_after} s",
                "retry_after": limited.retry_after,
            },
        )
        event = self._rejected(sub, sub.idempotency_key, outcome)
        await self.stores.requests.record_refusal(f"{sub.cause.event_id}\x1flimited", sub.office_id, [event])

    async def _answer_of(self, sub: Submission, key: str, doc: dict[str, Any]) -> Outcome:
        """Wait for the first request's answer; take the claim over if its owner died."""
        deadline = time.monotonic() + self.wait
        while doc["state"] != "done":
            taken = await self.stores.requests.take_over(doc, self.service.now, self.stale)
            if taken is not None:
                return await self._decide_and_record(sub, key, doc["booking_id"], taken)
            if time.monotonic() > deadline:
                return Outcome(
                    409, {"error": "in-progress", "message": "the first request is still being handled"}
                )
            await asyncio.sleep(0.05)
            doc = await self.stores.requests.get(sub.portal_id, key) or doc
        return Outcome(doc["status"], doc["answer"])

    async def _decide_and_record(
        self, sub: Submission, key: str, booking_id: str, claimed_at: datetime
    ) -> Outcome:
        """Decide and record the answer, retrying database errors (each step is idempotent per
        booking id); past the retries the claim is released, so a repeat need not wait it out."""
        rk = request_key(sub.portal_id, key)
        rejection: tuple[Outcome, Envelope[Any]] | None = None  # one event id across attempts
        for pause in (*DB_RETRY_PAUSES, None):
            try:
                existing = await self.stores.bookings.get(booking_id)  # written by an earlier attempt
                outcome = accepted(existing) if existing else await self._decide(sub, key, booking_id)
                if outcome.status >= 300 and (rejection is None or rejection[0] != outcome):
                    rejection = (outcome, self._rejected(sub, key, outcome))
                events = [rejection[1]] if outcome.status >= 300 and rejection else []
                await self.stores.requests.finish(rk, outcome.status, outcome.body, events, self.service.now)
                return outcome
            except PyMongoError as exc:
                if isinstance(exc, DuplicateKeyError):
                    raise
                if pause is None:
                    with contextlib.suppress(PyMongoError):
                        await self.stores.requests.release(rk, claimed_at)
                    raise
                log.warning("request %s: database error, retrying in %.1f s: %s", key, pause, exc)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    def _rejected(self, sub: Submission, key: str, outcome: Outcome) -> Envelope[Any]:
        b = outcome.body
        errors = b.get("errors") or [{}]
        payload = BookingRejected(
            request_id=key,
            portal_id=sub.portal_id,
            rule=b.get("rule") or errors[0].get("rule"),
            field=b.get("field") or errors[0].get("field"),
            message=shown(
                b["message"] + "".join(f"; {e['field']}: {e['message']}" for e in b.get("errors", [])[:5]),
                2000,
                PROSE_ALLOWED,
            ),
        )
        return self.service.producer.event(payload, sub.office_id, cause=sub.cause)

    # ----------------------------------------------------------------- the decision

    async def _decide(self, sub: Submission, key: str, booking_id: str) -> Outcome:
        policy = self.service.policies.get(sub.office_id)
        if policy is None:
            return Outcome(404, {"error": "not-found", "message": f"no office {sub.office_id!r}"})
        try:
            form = BookingForm.model_validate(sub.body)
        except ValidationError as exc:
            return invalid(form_errors(exc))
        cal, now = self.service.calendar(sub.office_id), self.service.now
        minutes = rules.duration_of(policy, form)
        errors = rules.form_field_errors(policy, form) + rules.window_errors(
            policy, cal, form.windows, minutes, now
        )
        if errors:
            return invalid(errors)
        refusal = rules.policy_refusal(policy, cal, form, now)
        jobseeker = None
        if refusal is None and policy.eligibility.requires_jobseeker_registration:
            jobseeker = await self.stores.jobseekers.get(sub.office_id, form.jobseeker_number or "")
            refusal = rules.eligibility_refusal(policy, form, jobseeker)
        person_key = self.stores.bookings.vault.person_key(sub.office_id, rules.person_identity(policy, form))
        if refusal is None:
            refusal = rules.refused_person(await self.stores.people.get(person_key), now)
        if refusal is not None:
            return refused(refusal)
        booking = Booking(
            booking_id=booking_id,
            office_id=sub.office_id,
            portal_id=sub.portal_id,
            request_id=key,
            correlation_id=str(sub.cause.correlation_id if sub.cause else uuid.uuid4()),
            status=Status.REQUESTED,
            created_at=now,
            updated_at=now,
            windows=[Window(w.start, w.end) for w in form.windows],
            duration_minutes=minutes,
            person=Person(
                name=form.name or "",
                name_kana=form.name_kana,
                address=form.address,
                phone=form.phone,
                email=form.email,
                jobseeker_number=form.jobseeker_number,
                topic=form.topic,
                notice_email=jobseeker.mypage_email if jobseeker else None,  # R06: HW My Page address
            ),
            person_key=person_key,
            terms_version=form.terms_version or "",  # R17: version and time of consent recorded
            terms_agreed_at=now,
            companions=list(form.companions or []),
            area=policy.area_of(form.address) if form.address else None,
        )
        await self.stores.bookings.insert(
            booking, self.service.envelopes(booking, self._news(sub, booking, form), sub.cause)
        )
        return accepted(booking)

    def _news(self, sub: Submission, booking: Booking, form: BookingForm) -> list[Payload]:
        news: list[Payload] = [
            BookingRequested(  # no personal data: the scheduler needs times, length, area, companions
                booking_id=booking.booking_id,
                windows=[TimeWindow(start=w.start, end=w.end) for w in form.windows],
                duration_minutes=booking.duration_minutes,
                area=booking.area,
                interpreter=bool(booking.companions),  # R15
            )
        ]
        if form.device is not None:  # R10: device identification, for audit only
            news.append(
                DeviceRecorded(
                    booking_id=booking.booking_id,
                    portal_id=sub.portal_id,
                    observed_at=booking.created_at,
                    **form.device.model_dump(),
                )
            )
        return news
