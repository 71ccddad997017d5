"""Promotion is a flip when the version is loaded ahead; older versions unload once drained."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from daemon.engine.client import EngineClient, EngineError
from daemon.engine.swap import Swapper
from daemon.memory.store import Store, connect
from tests.conftest import RedisServer
from tests.test_lifecycle import write_adapter


class RecordingEngine:
    """Stands in for vLLM's admin API: what was loaded, unloaded and warmed up, in order."""

    url = "http://engine"

    def __init__(self, loaded: set[str] | None = None, refuses: bool = False) -> None:
        self.loaded = set(loaded or ())
        self.refuses = refuses
        self.calls: list[tuple[str, str]] = []

    async def load_adapter(self, name: str, path: str) -> bool:
        self.calls.append(("load", name))
        if self.refuses:
            raise EngineError(f"loading {name} from {path} failed: rank 64 > max_lora_rank 16")
        fresh = name not in self.loaded
        self.loaded.add(name)
        return fresh

    async def loaded_models(self) -> list[str]:
        return ["base", *sorted(self.loaded)]

    async def unload_adapter(self, name: str) -> None:
        self.calls.append(("unload", name))
        self.loaded.discard(name)

    async def chat(self, model: str, messages: Any, **kwargs: Any) -> list[Any]:
        self.calls.append(("chat", model))
        return []


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[Store]:
    redis = connect(redis_server.url)
    yield Store(redis, "t")
    await redis.aclose()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_resident_versions_flip_without_loading(store: Store, tmp_path: Path) -> None:
    for version in (1, 2, 3):
        write_adapter(tmp_path, version)
    # mem-v1 was loaded by the consolidation that evaluated it: no load, no warm-up.
    engine = RecordingEngine(loaded={"mem-v1"})
    swapper = Swapper(
        [cast(EngineClient, engine)], store, tmp_path, "memoryd", "always", resident=1
    )
    first = await swapper.promote(1)
    assert "already loaded" in first.steps and "warm up" not in first.steps
    # mem-v2 loaded fresh: loaded and warmed up before the flip.
    second = await swapper.promote(2)
    assert engine.calls[-2:] == [("load", "mem-v2"), ("chat", "mem-v2")]
    assert "load" in second.steps and "warm up" in second.steps
    # Back to mem-v1: it stayed resident, so the promotion is only a flip.
    engine.calls.clear()
    back = await swapper.promote(1)
    assert list(back.steps) == ["wait for lock", "resident", "flip", "record"]
    assert engine.calls == [] and await store.active_version() == 1
    # A third version: the oldest inactive one (mem-v2) goes once no request uses it.
    swapper.acquire("mem-v2")
    await swapper.promote(3)
    await settle()
    assert ("unload", "mem-v2") not in engine.calls  # still streaming
    await swapper.release("mem-v2")
    await settle()
    assert ("unload", "mem-v2") in engine.calls
    assert list(swapper.loaded) == ["mem-v1", "mem-v3"] and engine.loaded == {"mem-v1", "mem-v3"}
    assert await swapper.resolve("memoryd", list) == "mem-v3"


async def test_restarted_engine_gets_the_active_version_first(store: Store, tmp_path: Path) -> None:
    for version in (1, 2):
        write_adapter(tmp_path, version)
    engine = RecordingEngine()
    swapper = Swapper(
        [cast(EngineClient, engine)], store, tmp_path, "memoryd", "always", resident=1
    )
    await swapper.promote(1)
    await swapper.promote(2)
    restarted = RecordingEngine()  # an engine that lost everything loaded at runtime
    await swapper.reconcile(cast(EngineClient, restarted))
    assert restarted.calls == [
        ("load", "mem-v2"), ("chat", "mem-v2"), ("load", "mem-v1"), ("chat", "mem-v1")
    ]  # fmt: skip
    restarted.calls.clear()
    await swapper.reconcile(cast(EngineClient, restarted))  # nothing missing: nothing done
    assert restarted.calls == []


async def test_an_engine_that_cannot_load_blocks_the_promotion(
    store: Store, tmp_path: Path
) -> None:
    for version in (1, 2):
        write_adapter(tmp_path, version)
    good, bad = RecordingEngine(), RecordingEngine(refuses=True)
    swapper = Swapper([cast(EngineClient, good)], store, tmp_path, "memoryd", "always")
    await swapper.promote(1)
    swapper.engines.append(cast(EngineClient, bad))
    with pytest.raises(EngineError, match=r"engine http://engine cannot load mem-v2: .*rank 64"):
        await swapper.promote(2)
    assert swapper.active is not None and swapper.active.name == "mem-v1"
    assert await store.active_version() == 1
