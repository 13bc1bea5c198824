"""The hash chain and its verifier, on plain documents."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from services.audit import chain
from services.audit.retention import checkpoint
from shared.mongo import Doc

KEY = b"chain-key"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def chained(n: int, stream: str = "kg") -> list[Doc]:
    docs = [
        {
            "_id": f"e{i}",
            "event_id": f"e{i}",
            "stream": stream,
            "occurred_at": T0 + timedelta(seconds=i),
            "payload": {"n": i, "f": 1.5},
        }
        for i in range(1, n + 1)
    ]
    return chain.link(docs, after_seq=0, prev_hash=chain.GENESIS, key=KEY)


def walk(docs: list[Doc], head: Doc | None = None, cp: Doc | None = None) -> chain.StreamReport:
    v = chain.StreamVerifier("kg", KEY, checkpoint=cp, head=head)
    for d in sorted(docs, key=lambda d: d["seq"]):
        v.feed(d)
    return v.finish()


def head_of(docs: list[Doc]) -> Doc:
    return {"_id": "kg", "seq": docs[-1]["seq"], "hash": docs[-1]["hash"]}


def test_an_intact_chain_verifies() -> None:
    docs = chained(5)
    report = walk(docs, head_of(docs))
    assert report.ok and report.checked == 5 and docs[0]["prev_hash"] == chain.GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(docs))


def test_an_edited_record_is_named() -> None:
    docs = chained(5)
    docs[2]["payload"]["n"] = 99
    problem = walk(docs, head_of(docs)).problem
    assert problem is not None and (problem.kind, problem.seq, problem.event_id) == ("edited", 3, "e3")


def test_a_deleted_record_is_named_by_its_seq() -> None:
    docs = chained(5)
    head = head_of(docs)
    del docs[1]
    problem = walk(docs, head).problem
    assert problem is not None and (problem.kind, problem.seq) == ("deleted", 2)
    assert "e3" in problem.detail


def test_records_deleted_at_the_end_are_caught_by_the_head() -> None:
    docs = chained(5)
    head = head_of(docs)
    problem = walk(docs[:3], head).problem
    assert problem is not None and (problem.kind, problem.seq) == ("deleted", 4)


def test_a_moved_record_breaks_the_link_but_not_its_own_hash() -> None:
    docs = chained(5)
    docs[1]["seq"], docs[2]["seq"] = 3, 2  # swap positions 2 and 3
    problem = walk(docs, head_of(docs)).problem
    assert problem is not None and (problem.kind, problem.seq, problem.event_id) == ("broken-link", 2, "e3")


def test_a_forged_record_without_the_key_fails() -> None:
    docs = chained(3)
    forged = chain.link(
        [{"_id": "x", "event_id": "x", "stream": "kg"}],
        after_seq=3,
        prev_hash=docs[-1]["hash"],
        key=b"guessed",
    )
    problem = walk(docs + forged).problem
    assert problem is not None and (problem.kind, problem.event_id) == ("edited", "x")


def test_verification_starts_at_a_retention_checkpoint() -> None:
    docs = chained(6)
    cp = checkpoint("kg", docs[2], cutoff=T0, now=T0, key=KEY)
    assert walk(docs[3:], head_of(docs), cp).ok
    assert walk(docs, head_of(docs), cp).ok  # records not yet deleted by the job are skipped
    cp["seq"] = 4  # someone moves the checkpoint to hide a deletion
    problem = walk(docs[4:], head_of(docs), cp).problem
    assert problem is not None and problem.kind == "checkpoint"


def test_hashing_survives_the_store_round_trip() -> None:
    doc = {"a": T0.replace(microsecond=123000), "f": -0.0, "n": [1, {"b": 2}]}
    back = {"n": [1, {"b": 2}], "f": 0.0, "a": T0.replace(microsecond=123000)}
    assert chain.digest(KEY, doc) == chain.digest(KEY, back)
