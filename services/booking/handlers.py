"""Thin subscribers of the booking inbox: portal commands and upstream records from `consult.intake`,
the scheduler's appointment events from `consult.events`. Verify the sender, parse, call, done."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from services.booking import rules
from services.booking.domain import IllegalTransition, InvalidFields
from services.booking.intake import Intake, Submission
from services.booking.ratelimit import RateLimits
from services.booking.service import BookingService, NotFound
from shared import topology
from shared.commands import (
    INTAKE_TYPES,
    ChangeWindows,
    JobseekerRecord,
    ObserveDevice,
    RequestBooking,
    parse_intake,
)
from shared.events import (
    AlternativesHeld,
    DeviceRecorded,
    Envelope,
    HoldExpired,
    LeftToStaff,
    MeetingJoined,
    MessageError,
    NoShow,
    NoticeTimerFired,
    SlotAssigned,
    parse_event,
    read_message,
)
from shared.messaging import Consumer, TransientError


def parse_message(body: bytes, exchange: str | None = None) -> Envelope[Any]:
    """Intake messages and events share the booking inbox: dispatch on the message's `type`.

    A message published to the intake exchange must be an intake message: a portal cannot pass
    off an event (say appointment.confirmed) as if a service had emitted it. Retried copies come
    back through the redeliver exchange and were checked on their first delivery.
    """
    data = read_message(body)
    if data["type"] in INTAKE_TYPES:
        return parse_intake(data)
    if exchange == topology.INTAKE:
        raise MessageError("not-an-intake-message", f"{data['type']!r} may not be sent to {topology.INTAKE}")
    return parse_event(data)


def windows_from_portal(service: BookingService) -> Callable[[Envelope[ChangeWindows]], Awaitable[None]]:
    """The handler of a portal's `ChangeWindows` (its sender verified by `portal_command`)."""

    async def change_windows(event: Envelope[ChangeWindows]) -> None:
        """R05: the person's new wished windows, from the portal that made the booking. What
        booking cannot take is parked with the reason, as HTTP answers it 404, 422 (each field with
        its rule id) or 409."""
        cmd = event.payload
        try:
            booking = await service.get(cmd.booking_id)
            if (booking.portal_id, booking.office_id) != (cmd.portal_id, cmd.office_id):
                raise NotFound(f"no booking {cmd.booking_id!r}")  # another portal's: not told it exists
            form = rules.read_windows(cmd.body)
            await service.change_windows(cmd.booking_id, form, f"portal:{cmd.portal_id}", cause=event)
        except NotFound as exc:
            raise MessageError("unknown-booking", f"{exc} of {cmd.portal_id} at {cmd.office_id}") from exc
        except InvalidFields as exc:
            raise MessageError("invalid-windows", str(exc)) from exc
        except IllegalTransition as exc:
            raise MessageError("illegal-transition", str(exc)) from exc

    return change_windows


def register(
    consumer: Consumer,
    service: BookingService,
    intake: Intake,
    limits: RateLimits,
    portal_prefix: str = topology.PORTAL_USER_PREFIX,
) -> None:
    stores = service.stores
    log = logging.getLogger(f"consult.{consumer.queues.service}")  # the runtime's logger
    on = consumer.on

    @consumer.verify(RequestBooking, ChangeWindows, ObserveDevice)
    async def portal_command(event: Envelope[Any], sender: str | None) -> None:
        """A portal's command comes from that portal's own broker user (issue 14): the `portal_id` in
        a body is a claim, the `user_id` RabbitMQ verified is not."""
        cmd: RequestBooking | ChangeWindows | ObserveDevice = event.payload
        await authorised(sender, cmd.office_id, claimed=cmd.portal_id)

    @consumer.verify(JobseekerRecord)
    async def upstream_record(event: Envelope[JobseekerRecord], sender: str | None) -> None:
        """The job-seeker system publishes as a portal user registered for the office it reports for."""
        await authorised(sender, event.payload.office_id)

    async def authorised(sender: str | None, office_id: str, claimed: str | None = None) -> None:
        portal = topology.portal_of_user(sender, portal_prefix)
        if portal is None or (claimed is not None and portal != claimed):
            expected = topology.portal_user(claimed or "<portal id>", portal_prefix)
            raise MessageError(
                "portal-identity",
                f"sent by broker user {sender or '(no user_id property)'}; must be {expected}, "
                "with the user_id property set to that user",
            )
        if not await stores.credentials.portal_known(portal, office_id):
            raise MessageError("portal-not-authorised", f"{portal!r} may not send for {office_id!r}")

    @on(RequestBooking)
    async def booking_request(event: Envelope[RequestBooking]) -> None:
        cmd = event.payload
        sub = Submission(cmd.portal_id, cmd.office_id, cmd.idempotency_key, cmd.body, event)
        # the same limits as over HTTP; a repeat of a request already taken costs nothing
        taken = await stores.requests.get(cmd.portal_id, cmd.idempotency_key) is not None
        if not taken and (limited := await limits.admit(cmd.portal_id, cmd.office_id, cmd.body)):
            await intake.reject_limited(sub, limited)
            return
        outcome = await intake.submit(sub)
        if outcome.in_progress:
            raise TransientError("the first request with this key is still being handled")

    @consumer.on_conflict(RequestBooking)
    async def reused_message_id(event: Envelope[RequestBooking]) -> None:
        cmd = event.payload  # its sender was verified: tell that portal
        await intake.reject_reused_message_id(
            Submission(cmd.portal_id, cmd.office_id, cmd.idempotency_key, cmd.body, event)
        )

    on(ChangeWindows)(windows_from_portal(service))

    @on(JobseekerRecord)  # jobseeker.registered and jobseeker.updated
    async def jobseeker(event: Envelope[JobseekerRecord]) -> None:
        rec = event.payload
        if rec.office_id not in service.policies:
            raise MessageError("unknown-office", rec.office_id)
        applied = await stores.jobseekers.upsert(rec)
        if not applied:
            log.info("jobseeker record older than the one held: ignored")

    @on(ObserveDevice)
    async def device(event: Envelope[ObserveDevice]) -> None:
        obs = event.payload  # its sender was verified above
        fields = obs.model_dump(
            include={"booking_id", "user_agent", "ip_address", "device_id", "app_version"}
        )
        payload = DeviceRecorded(portal_id=obs.portal_id, observed_at=obs.sent_at, **fields)
        await stores.devices.record(
            str(obs.message_id), obs.office_id, [service.producer.event(payload, obs.office_id, cause=event)]
        )

    # what the scheduler says about a booking
    on(SlotAssigned)(service.slot_assigned)
    on(AlternativesHeld)(service.alternatives_held)
    on(HoldExpired)(service.hold_expired)
    on(LeftToStaff)(service.left_to_staff)
    on(NoticeTimerFired)(service.notice_timer_fired)
    on(NoShow)(service.no_show)
    on(MeetingJoined)(service.meeting_joined)
