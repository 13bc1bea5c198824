"""Streamed exports: rows are encoded and sent a chunk at a time, never the whole result in memory.

An export is in chain order, whatever the database: streams by name, each in `seq` order (the
`chain_position` index, unique). MongoDB reads it from that index; FerretDB sorts any sorted query
in memory before its first record, so there the records are read once unsorted and `chain_ordered`
puts them in that order.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import tempfile
from array import array
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import IO

import bson
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions

from services.audit.search import COLUMNS, csv_row, public
from shared.mongo import Doc

log = logging.getLogger(__name__)
ROWS_PER_CHUNK = 500


class _Spool:
    """One stream's records, as BSON, in a temporary file (gone once closed), in the order read."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.seqs, self.offsets = array("q"), array("q")
        self.size = 0
        self.in_order = True

    def add(self, seq: int, data: bytes) -> None:
        if self.seqs and seq <= self.seqs[-1]:
            self.in_order = False
        self.seqs.append(seq)
        self.offsets.append(self.size)
        self.file.write(data)
        self.size += len(data)

    def replay(self, codec: CodecOptions[Doc]) -> Iterator[Doc]:
        """The records in `seq` order."""
        self.file.flush()
        self.file.seek(0)
        if self.in_order:
            yield from bson.decode_file_iter(self.file, codec)
            return
        for i in sorted(range(len(self.seqs)), key=self.seqs.__getitem__):
            self.file.seek(self.offsets[i])
            length = int.from_bytes(self.file.read(4), "little")
            self.file.seek(self.offsets[i])
            yield bson.decode(self.file.read(length), codec)


async def chain_ordered(
    records: AsyncIterable[Doc], codec: CodecOptions[Doc] = DEFAULT_CODEC_OPTIONS
) -> AsyncIterator[Doc]:
    """`records`, read once in any order, in chain order: streams by name, each in `seq` order.

    Each stream's records are spooled to a temporary file of their own while the read runs, then
    replayed stream after stream; Python memory holds two integers per record, not the records.
    A stream whose records came in `seq` order (FerretDB returns an unsorted query in insertion
    order, and a stream's records are inserted in `seq` order) is replayed as written; one that did
    not is replayed by its `seq`s, sorted. `codec`: the options the records were read with, so
    that they come back the same (aware datetimes, UUIDs).
    """
    spools: dict[str, _Spool] = {}
    with contextlib.ExitStack() as files:
        async for record in records:
            stream = str(record["stream"])
            spool = spools.get(stream)
            if spool is None:
                spool = spools[stream] = _Spool(files.enter_context(tempfile.TemporaryFile()))
            spool.add(int(record["seq"]), bson.encode(record, codec_options=codec))
        for stream in sorted(spools):
            for record in spools[stream].replay(codec):
                yield record


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
