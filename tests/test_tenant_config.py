"""Tenants without processes: config validation, each tenant's keys, paths and adapter names,
and the order in which tenants get their consolidation turns."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from daemon.config import DEFAULT_TENANT, ConfigError, Settings, load_settings
from daemon.consolidation import AlreadyRunning, Consolidator, Phase
from daemon.contract import Keys, WorkerArgs
from daemon.scope import Scope
from daemon.tenants import Rotation, Tenant, glob_escape


def settings(tmp_path: Path, **tenants: dict[str, object]) -> Settings:
    return Settings(state_dir=tmp_path, tenants=tenants)


def test_tenant_names_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "memoryd.yaml"
    for bad in ("Acme", "a_b", "x" * 33, "", "a:b"):
        config.write_text(f"tenants:\n  '{bad}':\n    api_keys: [k]\n")
        with pytest.raises(ConfigError, match="tenants"):
            load_settings(config)
    config.write_text("tenants:\n  acme-2:\n    api_keys: [k]\n    learn: false\n")
    assert load_settings(config).tenant("acme-2").learn is False


def test_unknown_tenant_keys_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "memoryd.yaml"
    config.write_text("tenants:\n  acme:\n    api_key: [k]\n")
    with pytest.raises(ConfigError, match=r"tenants\.acme\.api_key"):
        load_settings(config)


@pytest.mark.parametrize(
    ("server", "tenants"),
    [
        ({"api_keys": ["k"]}, {"acme": {"api_keys": ["k"]}}),
        ({}, {"acme": {"api_keys": ["k"]}, "globex": {"api_keys": ["k"]}}),
        ({"admin_token": "t"}, {"acme": {"admin_token": "t"}}),
        ({}, {"acme": {"api_keys": ["t"]}, "globex": {"admin_token": "t"}}),
    ],
)
def test_a_key_names_one_tenant(
    tmp_path: Path, server: dict[str, object], tenants: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match=r"given|also"):
        Settings(state_dir=tmp_path, server=server, tenants=tenants)


def test_keys_and_tokens_map_to_tenants(tmp_path: Path) -> None:
    s = Settings(
        state_dir=tmp_path,
        server={"api_keys": ["k0"], "admin_token": "op"},
        tenants={
            "acme": {"api_keys": ["k1", "k2"], "admin_token": "a"},
            "default": {"api_keys": ["k3"], "learn": False},
            "beta": {},
        },
    )
    assert s.tenant_names() == ["default", "acme", "beta"]
    assert s.api_key_tenants() == {"k0": "default", "k3": "default", "k1": "acme", "k2": "acme"}
    assert s.admin_tokens() == {"a": "acme", "op": None}
    assert s.tenant(DEFAULT_TENANT).learn is False
    assert Settings(state_dir=tmp_path).api_key_tenants() == {}


def test_the_default_tenant_keeps_the_single_tenant_layout(tmp_path: Path) -> None:
    s = settings(tmp_path, acme={})
    default = Scope.of(s)
    assert default.prefix == s.redis.key_prefix == "memoryd"
    assert default.keys.passages == "memoryd:passages"
    assert default.adapters_dir == s.adapters_dir and default.checkpoints_dir == s.checkpoints_dir
    assert default.adapter_name(4) == "mem-v4"
    assert (default.logs_dir, default.run_dir) == (tmp_path / "logs", tmp_path / "run")


def test_a_named_tenant_has_one_prefix_and_one_directory(tmp_path: Path) -> None:
    acme = Scope.of(settings(tmp_path, acme={}), "acme")
    assert acme.prefix == "memoryd:t:acme"
    assert acme.keys == Keys("memoryd").tenant("acme")
    assert acme.keys.fact("f1", "convs") == "memoryd:t:acme:fact:f1:convs"
    assert acme.keys.run(3) == "memoryd:t:acme:run:3"
    assert acme.adapter_name(4) == "mem-acme-v4"
    for path in (acme.adapters_dir, acme.checkpoints_dir, acme.logs_dir, acme.run_dir):
        assert path.parent == tmp_path / "tenants" / "acme"
    # One tenant's prefix never matches another's keys, nor the default tenant's.
    assert not "memoryd:t:acme-2:passages".startswith(acme.prefix + ":")
    assert glob_escape("memo*ry[d]") == "memo\\*ry\\[d\\]"


def test_the_worker_is_told_the_tenant(tmp_path: Path) -> None:
    args = WorkerArgs(
        settings=tmp_path / "s.json", run_id=2, redis_url="unix:///r", engine_url="http://e"
    )
    assert WorkerArgs.parse(args.argv()[3:]).tenant == DEFAULT_TENANT
    named = args.model_copy(update={"tenant": "acme"})
    assert WorkerArgs.parse(named.argv()[3:]).tenant == "acme"


class Turns:
    """A consolidator that always has something to learn, and takes one tick to learn it."""

    def __init__(self, name: str, started: list[str]) -> None:
        self.name, self.started, self.phase = name, started, Phase.idle
        self.run_id: int | None = None

    async def start(self, trigger: str) -> int:
        self.phase = Phase.running
        self.started.append(f"{self.name} ({trigger})")
        return 1

    async def tick(self) -> None:
        if self.phase != Phase.idle:
            self.phase = Phase.idle  # the run ends
        else:
            self.phase = Phase.running
            self.started.append(self.name)

    def on_chat(self) -> None:
        pass


def rotation(started: list[str]) -> Rotation:
    tenants = {
        name: Tenant(
            scope=cast(Scope, None),
            store=cast(object, None),  # type: ignore[arg-type]
            swapper=cast(object, None),  # type: ignore[arg-type]
            consolidator=cast(Consolidator, Turns(name, started)),
        )
        for name in ("default", "acme", "globex")
    }
    return Rotation(tenants)


async def test_turns_go_round_so_a_busy_tenant_cannot_starve_the_others() -> None:
    started: list[str] = []
    turns = rotation(started)
    for _ in range(12):
        await turns.tick()
    assert started == ["default", "acme", "globex"] * 2


async def test_one_run_at_a_time_and_the_operator_takes_a_turn() -> None:
    started: list[str] = []
    turns = rotation(started)
    assert await turns.start("acme", "operator") == 1
    with pytest.raises(AlreadyRunning, match="tenant acme"):
        await turns.start("globex", "operator")
    await turns.tick()  # acme's run ends
    await turns.tick()  # the next turn is the one after acme's
    assert started == ["acme (operator)", "globex"]
