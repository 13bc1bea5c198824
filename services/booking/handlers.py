"""Thin subscribers of the booking inbox: portal commands and upstream records from `consult.intake`,
the scheduler's appointment events from `consult.events`. Parse, call, done."""

from __future__ import annotations

from typing import Any

from services.booking.intake import Intake, Submission
from services.booking.service import BookingService
from shared.commands import JobseekerRecord, ObserveDevice, RequestBooking
from shared.events import DeviceRecorded, Envelope, MessageError
from shared.messaging import TransientError
from shared.runtime import Runtime

APPOINTMENT_EVENTS = (
    "appointment.confirmed",
    "appointment.recoordination_proposed",
    "appointment.hold_expired",
    "appointment.notice_due",
    "appointment.no_show",
)


def register(runtime: Runtime, service: BookingService, intake: Intake) -> None:
    stores = service.stores
    on = runtime.consumer.on

    @on("booking.request")
    async def booking_request(event: Envelope[Any]) -> None:
        cmd: RequestBooking = event.payload
        if not await stores.credentials.portal_known(cmd.portal_id, cmd.office_id):
            raise MessageError(
                "portal-not-authorised", f"{cmd.portal_id!r} may not book for {cmd.office_id!r}"
            )
        outcome = await intake.submit(
            Submission(cmd.portal_id, cmd.office_id, cmd.idempotency_key, cmd.body, event)
        )
        if outcome.in_progress:
            raise TransientError("the first request with this key is still being handled")

    @runtime.consumer.on_conflict("booking.request")
    async def reused_message_id(event: Envelope[Any]) -> None:
        cmd: RequestBooking = event.payload
        if await stores.credentials.portal_known(cmd.portal_id, cmd.office_id):  # else: parked only
            await intake.reject_reused_message_id(
                Submission(cmd.portal_id, cmd.office_id, cmd.idempotency_key, cmd.body, event)
            )

    async def jobseeker(event: Envelope[Any]) -> None:
        rec: JobseekerRecord = event.payload
        if rec.office_id not in service.policies:
            raise MessageError("unknown-office", rec.office_id)
        applied = await stores.jobseekers.upsert(rec)
        if not applied:
            runtime.log.info("jobseeker record older than the one held: ignored")

    on("jobseeker.registered")(jobseeker)
    on("jobseeker.updated")(jobseeker)

    @on("device.observed")
    async def device(event: Envelope[Any]) -> None:
        obs: ObserveDevice = event.payload
        if not await stores.credentials.portal_known(obs.portal_id, obs.office_id):
            raise MessageError(
                "portal-not-authorised", f"{obs.portal_id!r} may not report for {obs.office_id!r}"
            )
        fields = obs.model_dump(
            include={"booking_id", "user_agent", "ip_address", "device_id", "app_version"}
        )
        payload = DeviceRecorded(portal_id=obs.portal_id, observed_at=obs.sent_at, **fields)
        await stores.devices.record(
            str(obs.message_id), obs.office_id, [runtime.event(payload, obs.office_id, cause=event)]
        )

    for event_type in APPOINTMENT_EVENTS:
        on(event_type)(service.on_event)
