"""Every unit in systemd/ passes `systemd-analyze verify`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT

UNITS = sorted((ROOT / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: make installs it"
    # verify checks that ExecStart exists: point it at a stand-in executable.
    text = unit.read_text().replace("/opt/memoryd/.venv/bin/memoryd", "/bin/true")
    copy = tmp_path / unit.name
    copy.write_text(text)
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [line for line in out.stderr.splitlines() if unit.name in line or "memoryd" in line]
    assert out.returncode == 0 and not problems, out.stderr


def test_main_unit_is_notify_and_hardened() -> None:
    text = (ROOT / "systemd" / "memoryd.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=",
    ):
        assert line in text
