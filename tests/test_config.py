"""Configuration: YAML, environment overrides, and errors that name the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_settings
from tests.harness import MEMORYD, ROOT

DEFAULT = ROOT / "configs" / "default.yaml"


def test_defaults_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEMORYD_CONFIG", raising=False)
    s = load_settings(DEFAULT)
    assert s.server.port == 8000 and s.served_model_name == "memoryd"
    assert s.state_dir == Path("./var") and s.redis.url == "" and s.engine.model == ""


def test_environment_overrides_nested_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORYD_CONSOLIDATION__IDLE_AFTER_S", "5")
    monkeypatch.setenv("MEMORYD_SERVER__PORT", "9000")
    monkeypatch.setenv("MEMORYD_CONFIG", str(DEFAULT))
    s = load_settings()
    assert s.consolidation.idle_after_s == 5
    assert s.server.port == 9000


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: seventy\n")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_settings(bad)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("consolidation:\n  idle_after: 5\n")
    with pytest.raises(ConfigError, match=r"consolidation\.idle_after"):
        load_settings(bad)


def test_serve_refuses_invalid_config(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "MEMORYD_CONFIG": str(DEFAULT), "MEMORYD_SERVER__PORT": "-1"}
    out = subprocess.run([MEMORYD, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "server.port" in out.stderr and "MEMORYD_SERVER__PORT" in out.stderr


def test_serve_refuses_open_public_bind(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "MEMORYD_CONFIG": str(DEFAULT),
        "MEMORYD_SERVER__HOST": "0.0.0.0",
    }
    out = subprocess.run([MEMORYD, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "api_keys" in out.stderr
