"""Wiring of the scheduler service: stores, coordinator, timer wheel, handlers, staff API."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from services.scheduler import api, handlers, seed
from services.scheduler.answers import Answers
from services.scheduler.config import Settings
from services.scheduler.coordinator import Coordinator
from services.scheduler.keeper import Context, Keeper
from services.scheduler.metrics import SchedulerMetrics
from services.scheduler.staff import StaffDesk
from services.scheduler.store import CounsellorStore, LeaseStore, RequestStore, Reservations, TimerStore
from services.scheduler.store.staff_keys import EVERY_OFFICE, StaffKeyStore
from services.scheduler.wheel import TimerWheel
from shared import topology
from shared.clock import Clock
from shared.runtime import Runtime

DEV_STAFF = "dev-staff"  # the development key's subject (STAFF_API_KEY; every office; not in prod)


def build(settings: Settings, clock: Clock | None = None) -> tuple[Runtime, Coordinator, TimerWheel]:
    """The service's parts, wired; tests reach them through app.state."""
    runtime = Runtime(settings, topology.SCHEDULER, clock=clock)
    ctx = Context(
        policies=settings.policies(),
        counsellors=CounsellorStore(runtime.db),
        reservations=Reservations(runtime.db),
        requests=RequestStore(runtime.db),
        timers=TimerStore(runtime.db),
        clock=runtime.clock,
        replica_id=settings.replica_id,
        search_days=settings.search_days,
    )
    ctx.requests.on_write = runtime.marked_relay(ctx.requests.collection).poke
    ctx.timers.on_write = runtime.marked_relay(ctx.timers.outcomes).poke
    keeper = Keeper(ctx)
    coordinator = Coordinator(ctx, keeper)
    wheel = TimerWheel(
        ctx.timers,
        LeaseStore(runtime.db),
        runtime.clock,
        replica_id=settings.replica_id,
        lease_ttl=timedelta(seconds=settings.lease_seconds),
        poll_seconds=settings.timer_poll_seconds,
        horizon=timedelta(seconds=settings.timer_horizon_seconds),
        on_due=keeper.fire,
        on_sweep=keeper.sweep,
        takeover_read_timeout=settings.takeover_read_timeout_seconds,
    )
    ctx.timers.on_arm = wheel.arm

    @runtime.on_startup
    async def prepare() -> None:
        for store in (ctx.counsellors, ctx.reservations, ctx.requests, ctx.timers):
            await store.ensure_indexes()
        if settings.counsellors_file is not None:
            report = await seed.load(
                ctx.counsellors, ctx.policies, seed.read(settings.counsellors_file), ctx.clock.now()
            )
            runtime.log.info("counsellors loaded: %s", report)
        await wheel.start()

    keeper.on_fired = SchedulerMetrics(runtime.metrics, coordinator, wheel).timer_fired
    runtime.on_shutdown(wheel.stop)
    runtime.on_shutdown(keeper.stop)
    handlers.register(runtime.consumer, coordinator, Answers(coordinator), keeper)
    return runtime, coordinator, wheel


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime, coordinator, wheel = build(settings, clock)
    app = runtime.http_app(
        title="Scheduler service",
        description="Counsellors' availability, slot confirmation, re-coordination and durable timers",
    )
    desk = StaffDesk(coordinator)
    keys = StaffKeyStore(runtime.db)

    @runtime.on_startup
    async def staff_keys() -> None:
        await keys.ensure_indexes()
        if settings.staff_api_key:  # development and tests only (Settings refuses it in prod)
            await keys.register(settings.staff_api_key, DEV_STAFF, [EVERY_OFFICE], runtime.clock.now())

    app.include_router(api.router(coordinator, desk, wheel, keys))
    app.state.coordinator = coordinator
    app.state.staff = desk
    app.state.wheel = wheel
    return app
