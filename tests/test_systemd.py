"""Every unit in systemd/ passes `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT

UNITS = sorted((ROOT / "systemd").glob("*.service"))


def stand_in(text: str) -> str:
    """verify checks that ExecStart exists: point it at a stand-in executable."""
    for program in ("memoryd", "python"):
        text = text.replace(f"/opt/memoryd/.venv/bin/{program}", "/bin/true")
    return text


def verify(text: str, name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: make installs it"
    copy = tmp_path / name
    copy.write_text(stand_in(text))
    out = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [line for line in out.stderr.splitlines() if name in line or "memoryd" in line]
    assert out.returncode == 0 and not problems, out.stderr


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_verifies(unit: Path, tmp_path: Path) -> None:
    verify(unit.read_text(), unit.name, tmp_path)


def test_external_engine_and_redis_drop_in_verifies(tmp_path: Path) -> None:
    """memoryd.service with the drop-in for an external vLLM and Redis applied."""
    unit = (ROOT / "systemd" / "memoryd.service").read_text()
    drop_in = (ROOT / "systemd" / "memoryd.service.d" / "external.conf.example").read_text()
    assert "MEMORYD_ENGINE__UPSTREAMS" in drop_in and "MEMORYD_REDIS__URL" in drop_in
    engine = (ROOT / "systemd" / "memoryd-vllm.service").read_text()
    (tmp_path / "memoryd-vllm.service").write_text(stand_in(engine))  # what it Requires=
    verify(unit + "\n" + drop_in, "memoryd.service", tmp_path)


def exposure(text: str, name: str, tmp_path: Path) -> float:
    """`systemd-analyze security`'s overall exposure level (0 = locked down, 10 = exposed)."""
    copy = tmp_path / name
    copy.write_text(stand_in(text))
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout + out.stderr)
    assert level, out.stdout + out.stderr
    return float(level.group(1))


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_unit_security_exposure_is_low(unit: Path, tmp_path: Path) -> None:
    """The scores recorded in docs/DEPLOY.md; a directive dropped raises the level."""
    text = unit.read_text()
    assert exposure(text, unit.name, tmp_path) <= 1.8
    assert exposure(text.replace("SystemCallFilter=@system-service\n", ""), unit.name, tmp_path) > 2
    recorded = (ROOT / "docs" / "DEPLOY.md").read_text()
    assert f"| `{unit.name}` | 1.8 |" in recorded


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_units_keep_files_private_and_caches_in_their_cache_directory(unit: Path) -> None:
    text = unit.read_text()
    cache = re.search(r"^CacheDirectory=(\S+)$", text, re.M)
    assert cache and "UMask=0077" in text
    for variable in ("XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_ROOT"):
        value = re.search(rf"^Environment={variable}=(\S+)$", text, re.M)
        assert value and value.group(1).startswith(f"/var/cache/{cache.group(1)}"), variable


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
