"""The audit service's parts in one object: store, keys, ingest pipeline, retention job."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from services.audit import auth, retention
from services.audit.config import Settings
from services.audit.crypto import Keys, Pseudonymiser, Sealer
from services.audit.ingest import Appender, Batcher
from services.audit.records import Entry
from services.audit.store import AuditStore
from shared.runtime import Runtime

log = logging.getLogger(__name__)


class AuditService:
    def __init__(self, runtime: Runtime, settings: Settings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.keys = Keys.from_settings(settings)
        self.store = AuditStore(
            runtime.db, chain_key=self.keys.chain, view_max_days=settings.audit_view_max_days
        )
        self.pseudonymise = Pseudonymiser(self.keys.pseudonym)
        self.sealer = Sealer(self.keys.seal, self.keys.seal_id)
        self.appender = Appender(self.store, self.keys.chain, self.sealer, head_every=1.0)
        self.batcher = Batcher(
            self.appender.append,
            max_size=settings.audit_batch_max,
            linger=settings.audit_batch_linger_seconds,
            on_idle=self.appender.save_heads,
        )
        self._stopping = asyncio.Event()

    def now(self) -> datetime:
        return self.runtime.clock.now()

    async def record(self, entry: Entry) -> None:
        """Append one record; returns once it is written."""
        await self.batcher.submit(entry)

    async def start(self) -> None:
        await self.store.ensure_indexes()
        await self._bootstrap_keys()
        state = await self.store.view_state()
        self.batcher.start()
        if state.get("built") and not state.get("running"):
            self.store.view_ready = True
            await self.store.set_view_state(running=True)
        else:  # never built (records from before the view), or no clean stop since: copies may lack
            self.runtime.spawn(self._rebuild_view(), "audit-day-view")
        self._stopping.clear()
        if self.settings.audit_purge_interval_seconds > 0:
            self.runtime.spawn(self._retention_loop(), "audit-retention")

    async def stop(self) -> None:
        self._stopping.set()
        await self.batcher.stop()
        if self.store.view_ready:  # every record written by this process has its copy
            await self.store.set_view_state(running=False)

    async def _rebuild_view(self) -> None:
        """Copy the records the day view may lack; meanwhile reads go to `records` (as before the view)."""
        await self.store.set_view_state(running=True)
        copied = await self.store.rebuild_view()
        await self.store.set_view_state(built=True)
        self.store.view_ready = True
        log.info("audit day view rebuilt from %d records", copied)

    async def purge_once(self) -> list[retention.Purged]:
        return await retention.purge(
            self.store, self.settings, now=self.now(), key=self.keys.chain, submit=self.record
        )

    async def _retention_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(
                    self._stopping.wait(), timeout=self.settings.audit_purge_interval_seconds
                )
                return
            except TimeoutError:
                pass
            try:
                await self.purge_once()
            except Exception:  # the next run tries again; nothing is half-deleted without its checkpoint
                log.exception("retention job failed")

    async def _bootstrap_keys(self) -> None:
        """Dev and test only (the settings refuse these in prod): keys named in the environment."""
        for token, role in (
            (self.settings.audit_bootstrap_auditor_key, auth.AUDITOR),
            (self.settings.audit_bootstrap_approver_key, auth.APPROVER),
        ):
            if token:
                doc = auth.credential(
                    token, name=f"bootstrap {role}", roles=[role], now=self.now(), created_by="settings"
                )
                await self.store.put_credential(doc)
