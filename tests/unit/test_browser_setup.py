"""The browser libraries come from npm by the lockfile; the set-up installs what the browser tests need."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from deploy import local

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text()


def prerequisites(target: str) -> list[str]:
    line = re.search(rf"^{re.escape(target)}:([^#\n]*)", MAKEFILE, re.M)
    assert line, f"no `{target}` target"
    return line[1].split()


def test_browser_libraries_are_pinned_exactly_in_a_v3_lockfile() -> None:
    manifest = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    wanted = {**manifest["dependencies"], **manifest["devDependencies"]}
    assert set(wanted) == {"htmx.org", "axe-core"}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in wanted.values()), wanted
    assert wanted["htmx.org"].startswith("2.") and wanted["axe-core"].startswith("4.")
    assert lock["lockfileVersion"] == 3
    for name, version in wanted.items():
        locked = lock["packages"][f"node_modules/{name}"]
        assert locked["version"] == version and locked["integrity"].startswith("sha512-")


def test_nothing_minified_and_no_node_modules_is_committed() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not [f for f in files.splitlines() if f.endswith(".min.js") or f.startswith("node_modules/")]
    assert "node_modules/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_set_up_installs_the_assets_and_chromium_before_the_tests_and_services() -> None:
    assert "console-assets" in prerequisites("up") and "console-assets" in prerequisites("demo")
    for target in ("test", "test-browser"):
        assert {"console-assets", "chromium"} <= set(prerequisites(target)), target
    assert prerequisites("console-assets") == ["node_modules/.installed"]
    assert set(prerequisites("node_modules/.installed")) == {"package.json", "package-lock.json"}
    assert "npm ci --ignore-scripts" in MAKEFILE
    assert re.search(r"^chromium:.*\n\t@\$\(PY\) deploy/local.py chromium$", MAKEFILE, re.M)


def test_chromium_is_installed_only_when_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    installs: list[list[str]] = []
    monkeypatch.setattr(local, "apt_install", lambda name, packages: installs.append(packages))
    (tmp_path / "chromium").touch()
    packages = {"chromium": tmp_path / "chromium", "fonts": tmp_path / "f"}
    monkeypatch.setattr(local, "BROWSER_PACKAGES", packages)
    local.ensure_browser()
    assert installs == [["fonts"]]
    (tmp_path / "f").touch()
    local.ensure_browser()
    assert installs == [["fonts"]]  # all there: apt-get is not run again


def test_the_browser_packages_are_debians_chromium_and_a_japanese_font() -> None:
    assert local.BROWSER_PACKAGES["chromium"] == Path("/usr/bin/chromium")
    assert "fonts-noto-cjk" in local.BROWSER_PACKAGES
