"""Chain verification: re-walk every stream and name the first record edited, deleted or reordered.

`check_chains` serves the HTTP endpoint; `verify` is what `consultctl audit verify` calls.
One sorted pass over the records, memory per stream constant.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pymongo

from services.audit.chain import Problem, StreamReport, StreamVerifier
from services.audit.config import Settings
from services.audit.crypto import Keys
from services.audit.store import AuditStore
from shared.mongo import Doc, connect


@dataclass
class VerifyReport:
    streams: list[StreamReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.streams)

    @property
    def first_problem(self) -> Problem | None:
        return next((s.problem for s in self.streams if s.problem), None)

    def to_dict(self) -> Doc:
        problem = self.first_problem
        return {
            "ok": self.ok,
            "records_checked": sum(s.checked for s in self.streams),
            "first_problem": problem.__dict__ if problem else None,
            "streams": [s.to_dict() for s in self.streams],
        }


async def _finish(store: AuditStore, verifier: StreamVerifier) -> StreamReport:
    report = verifier.finish()
    problem = report.problem
    if problem is None or problem.kind != "broken-link" or verifier.last is None:
        return report
    # The record is genuine (its hash holds) but out of place: is its predecessor elsewhere, or gone?
    before = await store.find_by_hash(report.stream, str(verifier.last.get("prev_hash")))
    if before is not None:
        detail = f"it belongs right after record {before['event_id']}, which is at seq {before['seq']}"
        report.problem = Problem("reordered", report.stream, problem.seq, problem.event_id, detail)
    else:
        detail = f"the record that preceded {problem.event_id} (seq {problem.seq}) in the chain is missing"
        report.problem = Problem("deleted", report.stream, problem.seq, problem.event_id, detail)
    return report


#: A whole-store walk is a batch job: on FerretDB the sorted scan is materialised before the first
#: record arrives, which on a large store takes longer than the client's 30 s socket timeout.
WALK_DEADLINE_SECONDS = 1800.0


async def check_chains(store: AuditStore, key: bytes, stream: str | None = None) -> VerifyReport:
    with pymongo.timeout(WALK_DEADLINE_SECONDS):
        return await _check_chains(store, key, stream)


async def _check_chains(store: AuditStore, key: bytes, stream: str | None) -> VerifyReport:
    heads = await store.all_heads()
    checkpoints = await store.all_checkpoints()

    def start(name: str) -> StreamVerifier:
        return StreamVerifier(name, key, checkpoint=checkpoints.get(name), head=heads.get(name))

    report = VerifyReport()
    current: StreamVerifier | None = None
    async for record in store.chain_scan(stream):
        if current is None or current.report.stream != record["stream"]:
            if current is not None:
                report.streams.append(await _finish(store, current))
            current = start(record["stream"])
        current.feed(record)
    if current is not None:
        report.streams.append(await _finish(store, current))
    seen = {s.stream for s in report.streams}
    for name in sorted(set(heads) - seen):  # streams whose records are all gone (purged, or deleted)
        if stream is None or name == stream:
            report.streams.append(await _finish(store, start(name)))
    return report


async def verify(settings: Settings | None = None, *, stream: str | None = None) -> VerifyReport:
    """Verify the audit store the settings point at (environment, or the given settings)."""
    settings = settings or Settings()
    client = connect(settings.mongodb_url, app_name="consultctl")
    try:
        store = AuditStore(client[settings.database("audit")])
        return await check_chains(store, Keys.from_settings(settings).chain, stream)
    finally:
        await client.close()


def verify_sync(settings: Settings | None = None, *, stream: str | None = None) -> VerifyReport:
    return asyncio.run(verify(settings, stream=stream))
