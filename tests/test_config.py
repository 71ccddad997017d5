"""Configuration: YAML, environment overrides, and errors that name the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from daemon import preflight
from daemon.config import ConfigError, EngineConfig, RedisConfig, load_settings
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
    out = subprocess.run([MEMORYD, "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "api_keys" in out.stderr


def serve_refusal(tmp_path: Path, **env: str) -> list[str]:
    """The lines `memoryd serve` prints when it refuses to start (it must refuse: exit 2)."""
    base = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "MEMORYD_CONFIG": str(DEFAULT),
        "MEMORYD_STATE_DIR": str(tmp_path / "state"),
    }
    out = subprocess.run(
        [MEMORYD, "serve"], env={**base, **env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2, out.stderr
    return out.stderr.strip().splitlines()


def test_serve_refuses_rank_above_max_lora_rank_and_bad_extra_args(tmp_path: Path) -> None:
    """Two problems: one line each, naming its key, before anything is started."""
    lines = serve_refusal(
        tmp_path,
        MEMORYD_CONSOLIDATION__TRAINING__RANK="32",
        MEMORYD_ENGINE__EXTRA_ARGS='["--no-such-flag", "1"]',
    )
    assert len(lines) == 2, lines
    assert "consolidation.training.rank 32 is above engine.max_lora_rank 16" in lines[0]
    assert "engine.extra_args" in lines[1]
    assert "unrecognized arguments: --no-such-flag" in lines[1]
    assert not (tmp_path / "state").exists()  # refused before anything was started


def test_serve_refuses_a_max_lora_rank_vllm_does_not_offer(tmp_path: Path) -> None:
    lines = serve_refusal(
        tmp_path, MEMORYD_ENGINE__MAX_LORA_RANK="24", MEMORYD_CONSOLIDATION__TRAINING__RANK="8"
    )
    assert len(lines) == 1 and "--max-lora-rank: invalid choice: 24" in lines[0], lines


def test_memoryds_own_vllm_command_passes_vllms_parser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # asked afresh, then remembered
    settings = load_settings(DEFAULT)
    argv = preflight.vllm_command(settings.engine, Path("."))
    marker = preflight.accepted_marker(argv[argv.index("--model") :])
    assert marker is not None and not marker.exists()
    assert preflight.problems(settings) == []
    assert marker.exists() and marker.is_relative_to(tmp_path)


def test_field_problems_name_their_keys(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    s = load_settings(DEFAULT).model_copy(
        update={
            "state_dir": blocked / "state",
            "engine": EngineConfig(port=8000, model=str(tmp_path)),
            "redis": RedisConfig(url="rediss://r:6380/0", tls_ca_file=str(tmp_path / "ca.pem")),
        }
    )
    found = preflight.field_problems(s)
    assert len(found) == 4, found
    for key in ("state_dir", "engine.model", "redis.tls_ca_file", "engine.port 8000"):
        assert sum(line.startswith(key) for line in found) == 1, (key, found)


def test_redis_url_scheme_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("redis:\n  url: http://127.0.0.1:6379\n")
    with pytest.raises(ConfigError, match=r"redis\.url: .*rediss://"):
        load_settings(bad)
