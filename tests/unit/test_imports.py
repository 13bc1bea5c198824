"""What imports what, read from the source: `shared/` depends on nothing above it, and no modules of
the project import each other in a loop.

Every `import` and `from … import` counts wherever it stands (inside functions, under
`if TYPE_CHECKING:`), and so does `importlib.import_module("literal")`: a lazy import hides a loop
from the interpreter, not from the reader. The package a module sits in is not counted as imported by
it (a package's `__init__` re-exporting its modules is no loop).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the project's top-level packages
PACKAGES = ("shared", "services", "ops", "examples", "bench", "deploy", "demo", "tests")
#: the Go sources the local servers are built from (deploy/local.py), not ours
NOT_OURS = ("deploy/ferretdb", "deploy/mailpit")
#: what `shared/` must never import: everything built on it
ABOVE_SHARED = ("services", "ops", "examples", "bench", "deploy", "demo", "tests")
#: what a service must never import: the tools, examples and tests built on the services
ABOVE_SERVICES = ABOVE_SHARED[1:]

Graph = dict[str, set[str]]


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted name → source file of every module under the given top-level packages."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            if rel.as_posix().startswith(NOT_OURS) or "__pycache__" in rel.parts:
                continue
            parts = rel.with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imported(tree: ast.AST, name: str, is_package: bool) -> Iterator[str]:
    """Every dotted name the module's source imports (as written; relative imports resolved)."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield from (f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """Module → the project's modules it imports."""
    known = modules(root, packages)
    edges: Graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for imported in _imported(tree, name, path.name == "__init__.py"):
            # `import a.b.c` and `from a.b import c` both name the longest prefix that is a module
            parts = imported.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        edges[name] = targets
    return edges


def loops(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """One import loop (a → … → a) through each group of modules that reach each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # the project is small: recursion depth is the longest import chain
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(_loop_in(group, edges) for group in groups)


def _loop_in(group: set[str], edges: Mapping[str, set[str]]) -> list[str]:
    """The shortest loop from the group's first module back to it (breadth-first, inside the group)."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges.get(v, set()) & group):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if w not in came_from:
                    came_from[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no loop in a strongly connected group: {sorted(group)}")


def upward(edges: Mapping[str, set[str]]) -> list[str]:
    """`importer -> imported` for every import from shared/ into a package built on it."""
    return reaching(edges, "shared", ABOVE_SHARED)


def reaching(edges: Mapping[str, set[str]], below: str, above: tuple[str, ...]) -> list[str]:
    """`importer -> imported` for every import from the package `below` into one of `above`."""
    return sorted(
        f"{name} -> {target}"
        for name, targets in edges.items()
        if name.split(".")[0] == below
        for target in targets
        if target.split(".")[0] in above
    )


def test_services_import_neither_tools_nor_examples_nor_tests() -> None:
    assert reaching(graph(ROOT), "services", ABOVE_SERVICES) == [], (
        "a service ships alone: ops/, examples/, tests/ and the demo are built on it, never under it"
    )


def test_shared_imports_nothing_above_it() -> None:
    assert upward(graph(ROOT)) == [], "shared/ is what the services share: it imports none of them"


def test_no_modules_import_each_other_in_a_loop() -> None:
    found = loops(graph(ROOT))
    assert found == [], "import loops:\n" + "\n".join(" -> ".join(loop) for loop in found)


def test_the_reader_sees_lazy_relative_and_dynamic_imports(tmp_path: Path) -> None:
    files = {
        "shared/__init__.py": "",
        "shared/a.py": "def later():\n    from shared import b\n",
        "shared/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n",
        "shared/c.py": "import importlib\nimportlib.import_module('services.x')\nimport shared.a\n",
        "services/__init__.py": "",
        "services/x.py": "from shared.a import later\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    edges = graph(tmp_path, ("shared", "services"))
    assert edges["shared.a"] == {"shared.b"} and edges["shared.b"] == {"shared.c"}
    assert edges["shared.c"] == {"services.x", "shared.a"}
    assert upward(edges) == ["shared.c -> services.x"]
    assert loops(edges) == [["services.x", "shared.a", "shared.b", "shared.c", "services.x"]]


def test_one_loop_is_reported_for_each_tangle() -> None:
    edges = {"a": {"b"}, "b": {"a", "c"}, "c": {"d"}, "d": {"c"}, "e": {"a"}}
    assert loops(edges) == [["a", "b", "a"], ["c", "d", "c"]]
