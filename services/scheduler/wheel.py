"""The timer wheel: APScheduler 3 arms the pending timers of MongoDB while this replica holds the lease.

APScheduler 3 forgets a date job once it is submitted and, by default, skips a job more than 1 s late,
so it is only the alarm clock: the timers collection decides. On taking the lease (start-up, or a
crashed leader's lease expiring) the wheel fires every timer already due — late ones, with their
lateness recorded — then arms those due within the horizon. Every tick it renews the lease, fires
whatever is due (timers another replica created, jobs lost with a crash) and now and then re-reads the
horizon. A second replica waits for the lease; the conditional pending -> fired write makes a firing
happen once even if two replicas ever try.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from services.scheduler.store import LeaseStore, TimerStore
from services.scheduler.store.timers import PENDING
from shared.clock import Clock
from shared.mongo import Doc

log = logging.getLogger("consult.scheduler.wheel")

OnDue = Callable[[Doc], Awaitable[object]]
OnSweep = Callable[[], Awaitable[None]]


class TimerWheel:
    def __init__(
        self,
        timers: TimerStore,
        lease: LeaseStore,
        clock: Clock,
        *,
        replica_id: str,
        lease_ttl: timedelta,
        poll_seconds: float,
        horizon: timedelta,
        on_due: OnDue,
        on_sweep: OnSweep | None = None,
        rescan_every: int = 30,
    ) -> None:
        self.timers, self.lease, self.clock = timers, lease, clock
        self.replica_id = replica_id
        self.lease_ttl, self.poll_seconds, self.horizon = lease_ttl, poll_seconds, horizon
        self.on_due, self.on_sweep = on_due, on_sweep
        self.rescan_every = rescan_every
        self.leader = False
        self.armed: set[str] = set()
        self.stats: dict[str, Any] = {"takeovers": 0, "fired": 0, "last_takeover": None}
        self._scheduler: AsyncIOScheduler | None = None
        self._task: asyncio.Task[None] | None = None
        self._ticks = 0

    # ----------------------------------------------------------------- life

    async def start(self) -> None:
        self._scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(),
            timezone=UTC,
            # no misfire limit: a late timer still fires (its lateness is recorded)
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self._scheduler.start()
        self._task = asyncio.create_task(self._loop(), name="timer-wheel")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self.leader:
            self.leader = False
            with contextlib.suppress(Exception):
                await self.lease.release(self.replica_id, self.clock.now())

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away: keep the lease logic running, try again
                log.warning("timer wheel tick failed: %s", exc)
            await asyncio.sleep(self.poll_seconds)

    async def tick(self) -> None:
        """Renew or take the lease; as leader fire what is due and keep the horizon armed."""
        self._ticks += 1
        held = await self.lease.acquire(self.replica_id, self.clock.now(), self.lease_ttl)
        if held and not self.leader:
            await self._take_over()
            return
        if not held and self.leader:
            self._step_down()
        if not self.leader:
            return
        await self.fire_due()
        if self._ticks % self.rescan_every == 0:
            await self.arm_horizon()
            if self.on_sweep is not None:
                await self.on_sweep()

    async def _take_over(self) -> None:
        started = time.perf_counter()
        self.leader = True
        late = await self.fire_due()
        armed = await self.arm_horizon()
        took = time.perf_counter() - started
        self.stats["takeovers"] += 1
        self.stats["last_takeover"] = {"late_fired": late, "armed": armed, "seconds": round(took, 3)}
        log.info("%s runs the timers: fired %d late, armed %d in %.3fs", self.replica_id, late, armed, took)
        if self.on_sweep is not None:
            await self.on_sweep()

    def _step_down(self) -> None:
        log.warning("%s lost the timer lease; disarming", self.replica_id)
        self.leader = False
        if self._scheduler is not None:
            self._scheduler.remove_all_jobs()
        self.armed.clear()

    # ----------------------------------------------------------------- arming and firing

    def arm(self, doc: Doc) -> None:
        """Schedule one pending timer in APScheduler, if we lead and it is due within the horizon."""
        if not self.leader or self._scheduler is None or doc["_id"] in self.armed:
            return
        wait = (doc["due_at"] - self.clock.now()).total_seconds()
        if wait > self.horizon.total_seconds():
            return  # a later rescan arms it
        # APScheduler runs on the wall clock; the delay is measured on the injected clock
        run_at = datetime.now(UTC) + timedelta(seconds=max(wait, 0.0))
        self._scheduler.add_job(
            self._job, "date", run_date=run_at, args=[doc["_id"]], id=doc["_id"], replace_existing=True
        )
        self.armed.add(doc["_id"])

    async def arm_horizon(self) -> int:
        now = self.clock.now()
        docs = await self.timers.upcoming(now, now + self.horizon)
        for doc in docs:
            self.arm(doc)
        return len(docs)

    async def fire_due(self) -> int:
        """Fire every pending timer already due (in due order); returns how many were tried."""
        docs = await self.timers.due(self.clock.now())
        for doc in docs:
            await self._run(doc)
        return len(docs)

    async def _job(self, timer_id: str) -> None:
        self.armed.discard(timer_id)
        if not self.leader:
            return
        doc = await self.timers.get(timer_id)
        if doc is None or doc["status"] != PENDING:
            return
        if doc["due_at"] > self.clock.now():
            self.arm(doc)  # the injected clock is behind the wall clock (tests): wait for it
            return
        await self._run(doc)

    async def _run(self, doc: Doc) -> None:
        try:
            await self.on_due(doc)
            self.stats["fired"] += 1
        except Exception:  # stays pending: the next tick tries again
            log.exception("timer %s could not fire", doc["_id"])
