"""Wiring of the scheduler service: stores, coordinator, timer wheel, handlers, staff API."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from services.scheduler import api, handlers, schedule, seed
from services.scheduler.answers import Answers
from services.scheduler.auth import operator_auth
from services.scheduler.config import Settings
from services.scheduler.coordinator import Coordinator
from services.scheduler.graph_clients import GraphClients
from services.scheduler.keeper import Context, Keeper
from services.scheduler.meeting import Rooms
from services.scheduler.metrics import SchedulerMetrics
from services.scheduler.staff import StaffDesk
from services.scheduler.store import (
    CounsellorStore,
    LeaseStore,
    RequestStore,
    Reservations,
    TimerStore,
    indexes,
)
from services.scheduler.store.staff_keys import EVERY_OFFICE, StaffKeyStore
from services.scheduler.wheel import TimerWheel
from shared import parking, topology
from shared.clock import Clock
from shared.runtime import Runtime

DEV_STAFF = "dev-staff"  # the development key's subject and person (STAFF_API_KEY; every office; not in prod)


def build(settings: Settings, clock: Clock | None = None) -> tuple[Runtime, Coordinator, TimerWheel]:
    """The service's parts, wired; tests reach them through app.state."""
    runtime = Runtime(settings, topology.SCHEDULER, clock=clock)
    policies, reservations = settings.policies(), Reservations(runtime.db)
    graph = GraphClients(settings, policies)
    ctx = Context(
        policies=policies,
        counsellors=CounsellorStore(runtime.db),
        reservations=reservations,
        requests=RequestStore(runtime.db),
        timers=TimerStore(runtime.db),
        clock=runtime.clock,
        replica_id=settings.replica_id,
        rooms=Rooms(runtime.db, graph.get, reservations, runtime.clock, settings.meeting_dev_hosts),
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
        await indexes.ensure(runtime.db)
        if not await ctx.requests.queue_ready():  # an existing database: once, in the background
            runtime.spawn(backfill_queue(), "scheduler-queue-backfill")
        if settings.counsellors_file is not None:
            report = await seed.load(
                ctx.counsellors,
                ctx.policies,
                seed.read(settings.counsellors_file),
                ctx.clock.now(),
                settings.meeting_dev_hosts,
            )
            runtime.log.info("counsellors loaded: %s", report)
        if settings.environment == "prod" and (problems := await unready_rooms(ctx, graph)):
            raise RuntimeError("R16: consultations would get no room: " + "; ".join(problems))
        await wheel.start()

    async def backfill_queue() -> None:
        try:
            count = await ctx.requests.backfill_queue(ctx.clock.now())
        except Exception as exc:  # the queue is read by the query meanwhile; the next start tries again
            runtime.log.warning("coordination queue markers not backfilled: %s", exc)
            return
        runtime.log.info("coordination queue markers backfilled for %d waiting requests", count)

    keeper.on_fired = SchedulerMetrics(runtime.metrics, coordinator, wheel).timer_fired
    runtime.on_shutdown(wheel.stop)
    runtime.on_shutdown(graph.aclose)
    runtime.on_shutdown(keeper.stop)
    handlers.register(runtime.consumer, coordinator, Answers(coordinator), keeper)
    return runtime, coordinator, wheel


async def unready_rooms(ctx: Context, graph: GraphClients) -> list[str]:
    """What would leave a consultation without a room (prod refuses to start with any): an office
    creating Teams meetings without Graph credentials, an active counsellor without an organiser
    (Graph) or without a registered room (pre-issued) in the app they would be given."""
    problems = [
        f"{o}: no Graph credentials (GRAPH_CREDENTIALS or GRAPH_CERTIFICATES)" for o in graph.missing()
    ]
    for office_id in ctx.policies.ids():
        policy = ctx.policies[office_id]
        for c in await ctx.counsellors.of_office(office_id):
            config = Rooms.config(policy, c.app_for(policy))
            if config.provider == "graph" and not c.organizer:
                problems.append(f"{c.counsellor_id}: no Teams organiser")
            elif config.provider == "pre-issued" and not any(r.app == config.app for r in c.rooms):
                problems.append(f"{c.counsellor_id}: no {config.app.value} room registered")
    return problems


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
        if settings.staff_api_key:  # development and tests only (Settings refuses it in prod)
            await keys.register(settings.staff_api_key, DEV_STAFF, [EVERY_OFFICE], runtime.clock.now())

    app.include_router(api.router(coordinator, desk, wheel, keys))
    app.include_router(schedule.router(coordinator.ctx, keys))
    app.include_router(parking.ops_router(settings.amqp_url, runtime.queues, operator_auth(keys)))
    app.state.coordinator = coordinator
    app.state.staff = desk
    app.state.wheel = wheel
    return app
