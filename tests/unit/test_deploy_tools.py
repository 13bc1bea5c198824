"""The deploy checks' binaries (haproxy, promtool) come out of Debian's packages, once, before the tests;
a test that needs one and does not find it skips on a developer's machine and fails in CI."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy import local
from tests import support
from tests.unit.test_browser_setup import MAKEFILE, prerequisites


def test_make_test_and_check_deploy_unpack_haproxy_and_promtool_first() -> None:
    for target in ("test", "check-deploy"):
        assert {"haproxy-binary", "promtool"} <= set(prerequisites(target)), target
    assert re.search(r"^haproxy-binary:.*\n\t@\$\(PY\) deploy/local.py haproxy$", MAKEFILE, re.M)
    assert re.search(r"^promtool:.*\n\t@\$\(PY\) deploy/local.py promtool$", MAKEFILE, re.M)
    assert "promtool-go" not in prerequisites("test")  # the slow Go build stays optional
    assert local.UNPACKED["promtool"].package == "prometheus"


def fake_deb(into: Path, package: str, files: dict[str, str]) -> None:
    """A real .deb (dpkg-deb --build) holding executable scripts, as `apt-get download` would leave it."""
    tree = into / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: a test package\n"
    )
    for path, text in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
        (tree / path).chmod(0o755)
    subprocess.run(
        ["dpkg-deb", "--build", str(tree), str(into / f"{package}.deb")], check=True, capture_output=True
    )
    shutil.rmtree(tree)


class FakeApt:
    """apt-get without the network: `download` builds the packages' .debs, `--simulate` plans a library."""

    def __init__(self, debs: dict[str, dict[str, str]]) -> None:
        self.debs, self.calls = debs, list[list[str]]()

    def __call__(self, *args: str, cwd: Path | None = None, capture: bool = False) -> str:
        options = {i for i, a in enumerate(args) if a == "-o"}  # `-o Name=value` pairs: not what is asked
        self.calls.append([a for i, a in enumerate(args) if i not in options and i - 1 not in options])
        if "download" in args:
            assert cwd is not None
            for package in args[args.index("download") + 1 :]:
                fake_deb(cwd, package, self.debs[package])
        if "--simulate" in args:
            return "NOTE: This is only a simulation!\nInst libfake1 (1.0 Debian)\nInst haproxy (1.0 Debian)\n"
        return ""


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(local, "tool", lambda name: None)  # nothing installed on the PATH
    monkeypatch.setattr(local, "apt_knows", lambda package: True)
    return tmp_path


def test_promtool_alone_is_taken_out_of_the_package_once(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = FakeApt(
        {
            "prometheus": {
                "usr/bin/promtool": "#!/bin/sh\necho promtool, version 2.42.0\n",
                "usr/bin/prometheus": "#!/bin/sh\n",
            }
        }
    )
    monkeypatch.setattr(local, "apt_get", apt)
    exe = local.ensure_unpacked(local.UNPACKED["promtool"])
    assert exe == home / ".cache" / "consult-promtool" / "promtool" == local.unpacked("promtool")
    assert subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout.startswith(
        "promtool"
    )
    assert sorted(p.name for p in exe.parent.iterdir()) == ["promtool"]  # not the server, not the .deb
    assert apt.calls == [["download", "prometheus"]]
    local.ensure_unpacked(local.UNPACKED["promtool"])
    assert len(apt.calls) == 1  # there: apt-get is not run again


def test_haproxy_runs_with_the_libraries_apt_would_add(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = FakeApt(
        {
            "haproxy": {"usr/sbin/haproxy": '#!/bin/sh\necho "HAProxy version 2.6 libs=$LD_LIBRARY_PATH"\n'},
            "libfake1": {"usr/lib/x86_64-linux-gnu/libfake.so.1": ""},
        }
    )
    monkeypatch.setattr(local, "apt_get", apt)
    exe = local.ensure_unpacked(local.UNPACKED["haproxy"])
    assert exe == home / ".cache" / "consult-haproxy" / "haproxy"
    version = subprocess.run([exe, "-v"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == f"HAProxy version 2.6 libs={exe.parent}/root/usr/lib/x86_64-linux-gnu"
    assert apt.calls[-1] == ["download", "libfake1", "haproxy"]


def test_apt_lists_are_updated_only_when_apt_does_not_know_the_package(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apt = FakeApt({"prometheus": {"usr/bin/promtool": "#!/bin/sh\necho promtool\n"}})
    monkeypatch.setattr(local, "apt_get", apt)
    monkeypatch.setattr(local, "apt_knows", lambda package: False)
    monkeypatch.setattr(local.os, "geteuid", lambda: 0)
    local.ensure_unpacked(local.UNPACKED["promtool"])
    assert apt.calls[0] == ["update"]
    monkeypatch.setattr(local.os, "geteuid", lambda: 1000)
    (home / ".cache" / "consult-promtool" / "promtool").unlink()
    with pytest.raises(SystemExit, match="as root run: apt-get update"):
        local.ensure_unpacked(local.UNPACKED["promtool"])


def test_a_binary_that_does_not_run_is_not_left_behind(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        local, "apt_get", FakeApt({"prometheus": {"usr/bin/promtool": "#!/bin/sh\nexit 127\n"}})
    )
    with pytest.raises(SystemExit, match="does not run"):
        local.ensure_unpacked(local.UNPACKED["promtool"])
    assert local.unpacked("promtool") is None


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_tool_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"`make promtool` provides it"):
        support.missing_tool("promtool", "promtool")
