"""Which adapter a public model name means, and switching it without dropping a request.

``memoryd`` (the served name) is an alias for the active ``mem-vN``, or for the
base model while none is active. Promotion loads the new version on every
engine, warms it up with one request, then flips the alias: a request resolves
the alias once, at its start, so requests in flight finish on the version they
started with. The previous version is unloaded once no request uses it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from daemon.engine.adapters import adapter_dir, adapter_name, verify
from daemon.engine.client import BASE_MODEL_NAME, EngineClient
from daemon.memory.relevance import Embedder, Relevance, query_text
from daemon.memory.store import Store

log = logging.getLogger("memoryd.swap")
WARMUP = [{"role": "user", "content": "Hello"}]


class UnknownModel(Exception):
    pass


@dataclass(frozen=True)
class Loaded:
    version: int
    name: str
    path: Path
    created: float
    relevance: Relevance


class Swapper:
    def __init__(
        self,
        engines: list[EngineClient],
        store: Store,
        adapters_dir: Path,
        alias: str,
        routing: Literal["relevant", "always"] = "relevant",
        threshold: float = 0.5,
        embedder: Embedder | None = None,
    ) -> None:
        self.routing = routing
        self.threshold = threshold
        self.embedder = embedder or Embedder()
        self.engines = engines
        self.store = store
        self.adapters_dir = adapters_dir
        self.alias = alias
        self.active: Loaded | None = None
        self.loaded: dict[str, Loaded] = {}
        self.in_flight: Counter[str] = Counter()
        self._lock = asyncio.Lock()
        self._drained = asyncio.Condition()
        self._unloads: set[asyncio.Task[None]] = set()

    # --- request path ------------------------------------------------------
    async def resolve(self, public_name: str, texts: Callable[[], list[str]]) -> str:
        """The engine-side model name for a public one; raises UnknownModel.

        The alias means the active adapter for a request about what it learned
        (see daemon.memory.relevance), the base model otherwise; ``texts`` is
        only read when that decision needs it.
        """
        if public_name == self.alias:
            active = self.active
            if active is None:
                return BASE_MODEL_NAME
            if self.routing == "always":
                return active.name
            query = await asyncio.to_thread(self.embedder.embed, [query_text(texts())])
            return active.name if active.relevance.covers(query[0]) else BASE_MODEL_NAME
        if public_name == BASE_MODEL_NAME or public_name in self.loaded:
            return public_name
        raise UnknownModel(public_name)

    def acquire(self, engine_name: str) -> None:
        self.in_flight[engine_name] += 1

    async def release(self, engine_name: str) -> None:
        self.in_flight[engine_name] -= 1
        if self.in_flight[engine_name] <= 0:
            del self.in_flight[engine_name]
            async with self._drained:
                self._drained.notify_all()

    # --- control path ------------------------------------------------------
    async def _load_everywhere(self, version: int) -> Loaded:
        path = adapter_dir(self.adapters_dir, version)
        manifest = await asyncio.to_thread(verify, path)
        name = adapter_name(version)
        for engine in self.engines:
            await engine.load_adapter(name, str(path.resolve()))
            await engine.chat(name, WARMUP, max_tokens=1)
        relevance = await asyncio.to_thread(Relevance.load, path, self.threshold)
        loaded = Loaded(version, name, path, manifest.created_at, relevance)
        self.loaded[name] = loaded
        return loaded

    async def promote(self, version: int) -> None:
        """Serve ``mem-v<version>`` as the alias; the old version drains, then unloads."""
        async with self._lock:
            new = await self._load_everywhere(version)
            old, self.active = self.active, new
            await self.store.set_active_version(version)
            log.info("promoted %s (was %s)", new.name, old.name if old else BASE_MODEL_NAME)
        if old and old.name != new.name:
            self._unload_later(old.name)

    async def deactivate(self) -> None:
        """Serve the base model again (e.g. every consolidated fact was forgotten)."""
        async with self._lock:
            old, self.active = self.active, None
            await self.store.set_active_version(None)
        if old:
            self._unload_later(old.name)

    async def discard(self, version: int) -> None:
        """Unload a version that will not serve (loaded by a run for evaluation, then failed)."""
        name = adapter_name(version)
        if name in self.loaded:
            return
        for engine in self.engines:
            try:
                await engine.unload_adapter(name)
            except Exception:
                log.warning("unloading %s failed", name, exc_info=True)

    def _unload_later(self, name: str) -> None:
        task = asyncio.create_task(self._unload_when_drained(name), name=f"unload-{name}")
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    async def _unload_when_drained(self, name: str) -> None:
        async with self._drained:
            await self._drained.wait_for(lambda: self.in_flight[name] == 0)
        if self.active and self.active.name == name:
            return  # promoted again meanwhile
        self.loaded.pop(name, None)
        for engine in self.engines:
            try:
                await engine.unload_adapter(name)
            except Exception:
                log.warning("unloading %s failed", name, exc_info=True)

    async def restore(self) -> None:
        """After (re)starting an engine: load the active version again."""
        version = await self.store.active_version()
        async with self._lock:
            self.loaded.clear()
            self.active = None
            if version is None:
                return
            try:
                self.active = await self._load_everywhere(version)
            except Exception:
                log.exception(
                    "active adapter v%s could not be loaded; serving the base model", version
                )
