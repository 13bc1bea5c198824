"""Every rule R01–R20 keeps at least one test that names it (see docs/rules.md)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
RULE_IDS = [f"R{n:02d}" for n in range(1, 21)]


def test_every_rule_has_a_named_test() -> None:
    names = {
        m.group(1)
        for path in TESTS.rglob("test_*.py")
        for m in re.finditer(r"def (test_\w+)", path.read_text(encoding="utf-8"))
    }
    missing = [r for r in RULE_IDS if not any(re.search(rf"(^|_){r.lower()}(_|$)", n) for n in names)]
    assert missing == [], f"rules without a named test: {missing}"


def test_rules_document_lists_every_rule() -> None:
    doc = (TESTS.parent / "docs" / "rules.md").read_text(encoding="utf-8")
    assert all(f"| {r} |" in doc for r in RULE_IDS)
