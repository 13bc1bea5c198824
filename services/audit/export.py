"""Streamed exports: rows are encoded and sent a chunk at a time, never the whole result in memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterable, AsyncIterator

from services.audit.search import COLUMNS, csv_row, public
from shared.mongo import Doc

ROWS_PER_CHUNK = 500


async def csv_chunks(records: AsyncIterable[Doc]) -> AsyncIterator[bytes]:
    """UTF-8 with a BOM, so spreadsheet software shows Japanese text correctly."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    buf.write("\ufeff")
    writer.writerow(COLUMNS)
    rows = 0
    async for record in records:
        writer.writerow(csv_row(record))
        rows += 1
        if rows % ROWS_PER_CHUNK == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


async def json_chunks(records: AsyncIterable[Doc]) -> AsyncIterator[bytes]:
    """One JSON array, written record by record."""
    parts: list[str] = ["["]
    first = True
    async for record in records:
        parts.append(("\n" if first else ",\n") + json.dumps(public(record), ensure_ascii=False))
        first = False
        if len(parts) >= ROWS_PER_CHUNK:
            yield "".join(parts).encode()
            parts.clear()
    parts.append("\n]\n")
    yield "".join(parts).encode()
