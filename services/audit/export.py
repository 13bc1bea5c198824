"""Streamed exports: rows are encoded and sent a chunk at a time, never the whole result in memory."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator

from services.audit.search import COLUMNS, csv_row, public
from shared.mongo import Doc

log = logging.getLogger(__name__)
ROWS_PER_CHUNK = 500


async def csv_chunks(records: AsyncIterable[Doc]) -> AsyncIterator[bytes]:
    """UTF-8 with a BOM, so spreadsheet software shows Japanese text correctly.

    The status line has gone out before the first row: if reading fails midway, the file ends with
    an `# EXPORT INCOMPLETE` line rather than looking like a shorter, complete export.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    buf.write("\ufeff")
    writer.writerow(COLUMNS)
    yield buf.getvalue().encode()
    buf.seek(0)
    buf.truncate()
    rows = 0
    try:
        async for record in records:
            writer.writerow(csv_row(record))
            rows += 1
            if rows % ROWS_PER_CHUNK == 0:
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
    except Exception as exc:
        log.error("audit export failed after %d rows: %s", rows, exc)
        buf.write(f"# EXPORT INCOMPLETE after {rows} rows: {type(exc).__name__}\r\n")
        yield buf.getvalue().encode()
        raise
    yield buf.getvalue().encode()


async def json_chunks(records: AsyncIterable[Doc]) -> AsyncIterator[bytes]:
    """One JSON array, written record by record (closed only when complete, so a failure shows)."""
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
