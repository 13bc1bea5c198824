"""The hash chain: each record carries the hash of the one before it in its stream.

hash = HMAC-SHA256(chain key, canonical JSON of the record without `hash` and `seq`). Keyed, so someone
with write access to the database but not the key cannot re-hash the chain after an edit. `seq` is
only the position index (unique per stream); it is left out of the hash so that a record moved to
another position still hashes correctly and shows up as *reordered*, not as *edited*.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from shared.mongo import Doc

GENESIS = "0" * 64
UNHASHED = frozenset({"hash", "seq"})

ProblemKind = Literal["edited", "deleted", "reordered", "broken-link", "checkpoint"]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    if isinstance(value, float):
        return value + 0.0  # -0.0 comes back from the store as 0.0
    if isinstance(value, UUID | bytes):
        return value.hex() if isinstance(value, bytes) else str(value)
    return value


def canonical(doc: Doc, skip: frozenset[str] = UNHASHED) -> bytes:
    body = {k: v for k, v in doc.items() if k not in skip}
    return json.dumps(_plain(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(key: bytes, doc: Doc, skip: frozenset[str] = UNHASHED) -> str:
    return hmac.new(key, canonical(doc, skip), hashlib.sha256).hexdigest()


def link(records: Sequence[Doc], *, after_seq: int, prev_hash: str, key: bytes) -> list[Doc]:
    """Chain records after (after_seq, prev_hash); returns new documents, the inputs are left alone."""
    out: list[Doc] = []
    for i, record in enumerate(records, start=1):
        doc = {**record, "seq": after_seq + i, "prev_hash": prev_hash}
        doc["hash"] = prev_hash = digest(key, doc)
        out.append(doc)
    return out


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    stream: str
    seq: int
    event_id: str | None
    detail: str


@dataclass
class StreamReport:
    stream: str
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_seq: int | None = None
    checkpoint_seq: int = 0
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_dict(self) -> Doc:
        return {**asdict(self), "ok": self.ok}


class StreamVerifier:
    """Walks one stream in seq order and stops at the first record that breaks the chain."""

    def __init__(self, stream: str, key: bytes, *, checkpoint: Doc | None = None, head: Doc | None = None):
        self.key = key
        self.head = head
        self.report = StreamReport(stream, head_seq=head["seq"] if head else None)
        self.expected = 1
        self.prev = GENESIS
        self.last: Doc | None = None
        if checkpoint is not None:
            self._start_at(checkpoint)

    def _start_at(self, checkpoint: Doc) -> None:
        self.expected, self.prev = checkpoint["seq"] + 1, checkpoint["hash"]
        self.report.checkpoint_seq = checkpoint["seq"]
        if not hmac.compare_digest(
            checkpoint.get("mac", ""), digest(self.key, checkpoint, frozenset({"mac"}))
        ):
            self._fail("checkpoint", checkpoint["seq"], None, "the retention checkpoint was altered")

    def _fail(self, kind: ProblemKind, seq: int, event_id: str | None, detail: str) -> None:
        if self.report.problem is None:
            self.report.problem = Problem(kind, self.report.stream, seq, event_id, detail)

    def feed(self, record: Doc) -> None:
        seq = record["seq"]
        if self.report.problem is not None or seq <= self.report.checkpoint_seq:
            return  # past the first problem, or purged-but-not-yet-deleted records before the checkpoint
        self.report.checked += 1
        if self.report.first_seq is None:
            self.report.first_seq = seq
        self.report.last_seq = seq
        eid = record.get("event_id")
        if not hmac.compare_digest(str(record.get("hash", "")), digest(self.key, record)):
            self._fail("edited", seq, eid, "its content no longer matches its hash")
        elif seq > self.expected:
            missing = f"{self.expected}" if seq == self.expected + 1 else f"{self.expected}..{seq - 1}"
            self._fail(
                "deleted", self.expected, None, f"seq {missing} missing before record {eid} (seq {seq})"
            )
        elif seq < self.expected:
            self._fail("reordered", seq, eid, f"a second record at seq {seq}")
        elif record.get("prev_hash") != self.prev:
            self._fail("broken-link", seq, eid, "it does not follow the record before it")
        self.prev, self.expected, self.last = record.get("hash", ""), seq + 1, record

    def finish(self) -> StreamReport:
        head = self.head
        if self.report.problem is None and head is not None and head["seq"] >= self.expected:
            self._fail(
                "deleted", self.expected, None, f"seq {self.expected}..{head['seq']} missing at the end"
            )
        last = self.last
        if (
            head is not None
            and last is not None
            and head["seq"] == last["seq"]
            and head["hash"] != last["hash"]
        ):
            self._fail(
                "edited", last["seq"], last.get("event_id"), "the stream head does not match this record"
            )
        return self.report
