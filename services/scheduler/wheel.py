"""The timer wheel: APScheduler 3 arms the pending timers while this replica holds the lease.

APScheduler 3 forgets a date job once it is submitted and, by default, skips a job more than 1 s late,
so it is only the alarm clock: the timers collection decides. On taking the lease (start-up, or a
crashed leader's lease expiring) the wheel reads the due markers of the days from the watermark to
the end of the horizon into memory (`DueIndex`; FerretDB answers any query but `{_id: value}` with a
full scan, so neither the take-over nor the ticks query the timers), fires every timer already due
— late ones, with their lateness recorded — and arms those due within the horizon. What it holds is
bounded by those days' timers, not by every pending one. Every tick it renews the lease, loads the
next day's markers when the horizon reaches that day, merges the feed of timers armed since (by any
replica), fires what is due from memory, each read back by `_id` to check it is still pending, and
arms what entered the horizon; now and then it settles the past days' buckets and moves the
watermark past them. A second replica waits for the lease; the outcome insert (a unique `_id`)
makes a firing happen once even if two replicas ever try. Before the first backfill of the markers
(`TimerStore.backfill`) a take-over reads every pending timer once, as it always did, and writes
their markers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from services.scheduler.due_index import DueIndex
from services.scheduler.store import LeaseStore, TimerStore
from services.scheduler.store.timers import PENDING, due_day
from shared.clock import JST, Clock
from shared.mongo import Doc
from shared.runtime import task_stacks

log = logging.getLogger("consult.scheduler.wheel")


class LeaseLost(Exception):
    """The lease ran out during a take-over (a scan longer than the lease)."""


class TakeOverStalled(Exception):
    """A take-over's reads did not finish within their bound: abandoned, tried again next tick."""


T = TypeVar("T")
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
        feed_grace: timedelta = timedelta(minutes=5),
        fire_batch: int = 500,
        takeover_read_timeout: float = 30.0,
    ) -> None:
        self.timers, self.lease, self.clock = timers, lease, clock
        self.replica_id = replica_id
        self.lease_ttl, self.poll_seconds, self.horizon = lease_ttl, poll_seconds, horizon
        self.on_due, self.on_sweep = on_due, on_sweep
        self.rescan_every = rescan_every
        # an announced timer not written after this is dropped (its writer crashed in between)
        self.feed_grace, self.fire_batch = feed_grace, fire_batch
        # A take-over's reads once hung on FerretDB right at start-up, while the first timers were
        # being written, and finished only when the consumer stopped at shutdown (docs/performance.md,
        # finding 13); so they are bounded, and a stalled take-over starts again with twice the bound
        # (a history whose scan really takes longer still gets read).
        self.takeover_read_timeout = self._read_bound = takeover_read_timeout
        self.leader = False
        self.armed: set[str] = set()
        # timers being fired now: a tick and an APScheduler job both find a timer due at its due
        # time, and only one of them may run it (the other's resolve would be refused anyway)
        self.firing: set[str] = set()
        self.index = DueIndex()
        # the last JST day whose due markers are in `index` (None: not leading; date.max: every
        # pending timer, read before the markers were backfilled)
        self.loaded_through: date | None = None
        self.stats: dict[str, Any] = {
            "takeovers": 0,
            "fired": 0,
            "last_takeover": None,
            "feed_dropped": 0,
            "stalled_takeovers": 0,
        }
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
        """Renew or take the lease; as leader merge the feed, fire what is due, arm the horizon."""
        self._ticks += 1
        held = await self.lease.acquire(self.replica_id, self.clock.now(), self.lease_ttl)
        if held and not self.leader:
            await self._take_over()
            return
        if not held and self.leader:
            self._step_down()
        if not self.leader:
            return
        await self.load_days()
        await self.merge_feed()
        await self.fire_due()
        self.arm_horizon()
        if self._ticks % self.rescan_every == 0:
            await self.settle_past_days()
            if self.on_sweep is not None:
                await self.on_sweep()

    async def _take_over(self) -> None:
        started = time.perf_counter()
        self.leader = True  # from now on this replica's own arms go to memory at once
        step = "reading the feed"
        try:
            async with asyncio.timeout(self._read_bound):
                feed = await self.timers.feed_entries()  # before the read: what it misses, the feed has
                if await self.timers.markers_ready():
                    step = "reading the due markers"
                    pending = await self._renewing(self._read_days())
                else:
                    step = "scanning the pending timers"
                    pending = await self._renewing(self.timers.backfill(self.clock.now()))
                    self.loaded_through = date.max
                scanned = time.perf_counter() - started
                for timer_id, due_at in pending:
                    self.index.add(timer_id, due_at)
                step = "merging the feed"
                await self.merge_feed(feed)  # those the scan found are known now: deleted without a read
            late = await self.fire_due()
        except TimeoutError as exc:
            self._step_down(quiet=True)
            self.stats["stalled_takeovers"] += 1
            bound, self._read_bound = self._read_bound, self._read_bound * 2
            log.warning(
                "%s: take-over stalled over %.0fs while %s; starting again (bound now %.0fs); tasks:\n%s",
                self.replica_id,
                bound,
                step,
                self._read_bound,
                task_stacks(),
            )
            raise TakeOverStalled(f"stalled while {step}") from exc
        except BaseException:
            self._step_down(quiet=True)  # the next tick takes over again, from a fresh read
            raise
        self._read_bound = self.takeover_read_timeout
        armed = self.arm_horizon()
        took = time.perf_counter() - started
        self.stats["takeovers"] += 1
        self.stats["last_takeover"] = {
            "late_fired": late,
            "armed": armed,
            "pending": len(pending),
            "scan_seconds": round(scanned, 3),
            "seconds": round(took, 3),
        }
        log.info("%s runs the timers: fired %d late, armed %d in %.3fs", self.replica_id, late, armed, took)
        if self.on_sweep is not None:
            await self.on_sweep()

    async def _renewing(self, work: Awaitable[T]) -> T:
        """Await `work` (the take-over's scan: it can outlast the lease) while renewing the lease."""
        lost = False

        async def renew() -> None:
            nonlocal lost
            while not lost:
                await asyncio.sleep(min(self.poll_seconds, self.lease_ttl.total_seconds() / 3))
                with contextlib.suppress(Exception):  # the scan's own error is what counts
                    lost = not await self.lease.acquire(self.replica_id, self.clock.now(), self.lease_ttl)

        renewer = asyncio.create_task(renew())
        try:
            result = await work
        finally:
            renewer.cancel()
            await asyncio.wait({renewer}, timeout=self.lease_ttl.total_seconds())  # never held up by it
        if lost or not await self.lease.acquire(self.replica_id, self.clock.now(), self.lease_ttl):
            raise LeaseLost(f"{self.replica_id} lost the lease while reading the timers")
        return result

    def _today(self) -> date:
        return self.clock.now().astimezone(JST).date()

    def _horizon_day(self) -> date:
        return (self.clock.now() + self.horizon).astimezone(JST).date()

    async def _read_days(self) -> list[tuple[str, datetime]]:
        """The take-over's read: the markers of the days from the watermark to the horizon's end."""
        last = self._horizon_day()
        first = await self.timers.watermark(self._today())
        found = await self.timers.due_in(first, last)
        self.loaded_through = last
        return found

    async def load_days(self) -> int:
        """As leader: the markers of the days the horizon reached since the last look."""
        if self.loaded_through is None or not self.leader:
            return 0
        last = self._horizon_day()
        if last <= self.loaded_through:
            return 0
        found = await self.timers.due_in(self.loaded_through + timedelta(days=1), last)
        self.loaded_through = last
        return sum(self.index.add(timer_id, due_at) for timer_id, due_at in found)

    async def settle_past_days(self) -> None:
        """Drop the past days' buckets whose timers are all resolved and move the watermark past
        them; a day stays while it holds a pending (overdue, being fired) timer. Yesterday is kept:
        a replica whose clock is a little behind may still mark a timer in it."""
        if not self.leader:
            return
        first = day = await self.timers.watermark(self._today())
        while day < self._today() - timedelta(days=1) and not await self.timers.settle_day(day):
            day += timedelta(days=1)
        if day != first:
            await self.timers.set_watermark(day)

    def _step_down(self, *, quiet: bool = False) -> None:
        if not quiet:
            log.warning("%s lost the timer lease; disarming", self.replica_id)
        self.leader = False
        if self._scheduler is not None:
            self._scheduler.remove_all_jobs()
        self.armed.clear()
        self.index.clear()
        self.loaded_through = None

    # ----------------------------------------------------------------- knowing, arming, firing

    def arm(self, doc: Doc) -> None:
        """A timer this replica just created: known at once if we lead and its day is loaded (others
        learn it from the feed; a later day's from its bucket)."""
        if self.loaded_through is None or due_day(doc["due_at"], doc.get("armed_at")) > self.loaded_through:
            return
        if self.leader and self.index.add(doc["_id"], doc["due_at"]):
            self.arm_horizon()

    async def merge_feed(self, entries: list[Doc] | None = None) -> int:
        """Take the timers announced in the feed into memory; returns how many were new.

        An entry of a day not loaded yet goes without a read: its day's markers will be read when
        the horizon reaches it. Any other entry's timer is read by `_id`: pending ones are remembered,
        resolved ones ignored. An entry whose timer is not there yet stays (its writer is between
        the inserts) until `feed_grace` has passed; then the writer has crashed, and it goes."""
        if entries is None:
            entries = await self.timers.feed_entries()
        now, done, added = self.clock.now(), [], 0
        for entry in entries:
            timer_id = entry["_id"]
            if timer_id in self.index:
                done.append(timer_id)
                continue
            if (
                self.loaded_through is not None
                and due_day(entry["due_at"], entry.get("at")) > self.loaded_through
            ):
                await self.timers.mark_fed(entry)
                done.append(timer_id)
                continue
            doc = await self.timers.brief(timer_id)
            if doc is None:
                if now - entry["at"] < self.feed_grace:
                    continue
                self.stats["feed_dropped"] += 1
                log.warning("timer %s was announced but never written; dropped", timer_id)
            elif doc.get("status") == PENDING:
                added += self.index.add(timer_id, doc["due_at"])
            done.append(timer_id)
        await self.timers.forget_feed(done)
        return added

    def arm_horizon(self) -> int:
        """Schedule in APScheduler the known timers that entered the horizon; returns how many."""
        if not self.leader or self._scheduler is None:
            return 0
        now = self.clock.now()
        entering = self.index.take_arming(now + self.horizon)
        for timer_id, due_at in entering:
            # APScheduler runs on the wall clock; the delay is measured on the injected clock
            wait = max((due_at - now).total_seconds(), 0.0)
            self._schedule(timer_id, datetime.now(UTC) + timedelta(seconds=wait))
        return len(entering)

    def _schedule(self, timer_id: str, run_at: datetime) -> None:
        assert self._scheduler is not None
        self._scheduler.add_job(
            self._job, "date", run_date=run_at, args=[timer_id], id=timer_id, replace_existing=True
        )
        self.armed.add(timer_id)

    def _disarm(self, timer_id: str) -> None:
        self.index.discard(timer_id)
        if timer_id in self.armed and self._scheduler is not None:
            self.armed.discard(timer_id)
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(timer_id)

    async def fire_due(self) -> int:
        """Fire the known timers already due (in due order, a batch per tick); returns how many
        were tried."""
        if not self.leader:
            return 0
        taken = self.index.take_due(self.clock.now(), self.fire_batch)
        left = [timer_id for timer_id, _ in taken]
        try:
            while left:
                if not await self._fire(left[0]):
                    self.index.requeue(left[0])
                left.pop(0)
        finally:
            for timer_id in left:  # the database went away mid-batch: due again next tick
                self.index.requeue(timer_id)
        return len(taken)

    async def _job(self, timer_id: str) -> None:
        self.armed.discard(timer_id)
        if self.leader and timer_id in self.index:
            await self._fire(timer_id)  # if it cannot fire now, a tick finds it due

    async def _fire(self, timer_id: str) -> bool:
        """Fire one known timer, read back by `_id`; False if it is still to fire (or being fired
        by the other path: the tick looks again and finds it fired or still due)."""
        if timer_id in self.firing:
            return False
        self.firing.add(timer_id)
        try:
            return await self._fire_now(timer_id)
        finally:
            self.firing.discard(timer_id)

    async def _fire_now(self, timer_id: str) -> bool:
        doc = await self.timers.get(timer_id)
        if doc is None or doc["status"] != PENDING:
            self._disarm(timer_id)  # fired or cancelled meanwhile (by any replica)
            return True
        wait = (doc["due_at"] - self.clock.now()).total_seconds()
        if wait > 0:  # the injected clock is behind the wall clock (tests): wait for it
            self._schedule(timer_id, datetime.now(UTC) + timedelta(seconds=wait))
            return False
        if await self._run(doc):
            self._disarm(timer_id)
            return True
        return False

    async def _run(self, doc: Doc) -> bool:
        try:
            await self.on_due(doc)
            self.stats["fired"] += 1
        except Exception:  # stays pending: the next tick tries again
            log.exception("timer %s could not fire", doc["_id"])
            return False
        return True
