"""Exporting 100,000 records streams them: peak memory stays far below the size of the export."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from services.audit import chain, records
from services.audit.app import create_app
from services.audit.config import Settings
from services.audit.service import AuditService
from shared.clock import FixedClock
from shared.events import new_event
from tests import support
from tests.integration.test_audit_ingest import device
from tests.support.audit import AUDITOR_KEY, OFFICE, T0, auth

N = 100_000
CHUNK = 5_000


def vary(template: dict[str, Any], i: int) -> dict[str, Any]:
    rid, booking = f"bulk-{i:06d}", f"b-{i}"
    payload = {**template["payload"], "booking_id": booking}
    at = T0 + timedelta(milliseconds=i)
    return {
        **template,
        "_id": rid,
        "event_id": rid,
        "booking_id": booking,
        "occurred_at": at,
        "payload": payload,
    }


async def bulk_load(service: AuditService, clock: FixedClock) -> float:
    """N realistic device records, chained, inserted straight into the store (not through ingest)."""
    event = new_event(device("bulk"), office_id=OFFICE, producer="booking", clock=clock)
    template = records.from_event(event, now=T0, pseudonymise=service.pseudonymise).record
    started = time.perf_counter()
    seq, prev = 0, chain.GENESIS
    for base in range(0, N, CHUNK):
        docs = [vary(template, i) for i in range(base, base + CHUNK)]
        linked = chain.link(docs, after_seq=seq, prev_hash=prev, key=service.keys.chain)
        seq, prev = linked[-1]["seq"], linked[-1]["hash"]
        await service.store.records.insert_many(linked, ordered=False)
    await service.store.save_heads({OFFICE: (seq, prev)})
    return time.perf_counter() - started


@pytest.mark.slow
async def test_audit_export_of_100k_records_streams_without_holding_them(
    make_settings: Callable[..., Any], mongo: AsyncMongoClient[dict[str, Any]]
) -> None:
    settings: Settings = make_settings(
        Settings, audit_bootstrap_auditor_key=AUDITOR_KEY, audit_purge_interval_seconds=0
    )
    clock = FixedClock(T0)
    app = create_app(settings, clock)
    try:
        async with support.uvicorn_serving(app) as base_url:
            service: AuditService = app.state.audit
            load_s = await bulk_load(service, clock)

            size = lines = 0
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
            started = time.perf_counter()
            async with (
                httpx.AsyncClient(base_url=base_url, timeout=600) as client,
                client.stream(
                    "GET", "/v1/audit/export", params={"format": "csv", "kind": "device"}, headers=auth()
                ) as r,
            ):
                assert r.status_code == 200
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            export_s = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] - baseline
            tracemalloc.stop()
            print(f"\naudit export: loaded {N} records in {load_s:.1f}s; exported {size / 1e6:.1f} MB CSV in "
                  f"{export_s:.1f}s; peak Python memory growth {peak / 1e6:.1f} MB")  # fmt: skip
            assert lines == N + 1  # header and every record
            assert peak < size / 5, "the export held too much of itself in memory"
    finally:
        await mongo.drop_database(settings.database("audit"))  # 100k records: free the server now
