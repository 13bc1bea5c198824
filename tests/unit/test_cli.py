"""consultctl loads only the module a command needs, and its table of first words matches the tree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer

from ops import cli

ROOT = Path(__file__).resolve().parents[2]


def _first_words(app: typer.Typer) -> set[str]:
    return set(typer.main.get_group(app).commands)  # type: ignore[attr-defined]


def test_every_first_word_of_the_whole_tree_is_in_the_table_and_served_by_its_module() -> None:
    whole = _first_words(cli.build())
    assert whole == set(cli.COMMANDS), "name a new top-level command in ops.cli.COMMANDS"
    for word, module in cli.COMMANDS.items():
        assert word in _first_words(cli.build([module])), f"{word} is not served by {module}"


def test_a_command_imports_only_its_own_service() -> None:
    probe = (
        "import sys; from ops import cli\n"
        "try:\n    cli.main(['audit', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('\\n' + __import__('json').dumps(sorted(m for m in sys.modules if m.startswith('services.'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded and all(m.startswith("services.audit") for m in loaded), loaded
    assert "Usage: consultctl audit" in out.stdout
