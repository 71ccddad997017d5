"""Which adapter a public model name means, and switching it without dropping a request.

``memoryd`` (the served name) is an alias for the active ``mem-vN``, or for the
base model while none is active. Promotion makes sure the new version is loaded
on every engine, then flips the alias: a request resolves the alias once, at
its start, so requests in flight finish on the version they started with.

Loading is the expensive step (vLLM's runtime load took 17-54 s under 32
streaming clients on a CPU host, docs/BENCHMARKS.md), so it is done ahead: a
consolidation's evaluation has already loaded the version it passes, and the
``resident`` most recent versions before the active one stay loaded, so that a
promotion or a rollback among them is only a flip. Older versions are unloaded
once no request uses them. A version loaded fresh is warmed up with one request
before the flip; vLLM answers the load only once the adapter is complete, so no
request can reach a half-loaded one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from daemon.engine.adapters import adapter_dir, adapter_name, verify
from daemon.engine.client import BASE_MODEL_NAME, EngineClient, EngineError
from daemon.memory.relevance import Embedder, Relevance, query_text
from daemon.memory.store import Store

log = logging.getLogger("memoryd.swap")
WARMUP = [{"role": "user", "content": "Hello"}]


class UnknownModel(Exception):
    pass


class Promotion(BaseModel):
    """How long one promotion took, step by step: where swap time goes."""

    version: int
    steps: dict[str, float] = Field(default_factory=dict)  # seconds, in the order taken
    seconds: float = 0.0


class Laps:
    """Times consecutive steps: ``lap(name)`` ends the step that began at the previous lap."""

    def __init__(self, promotion: Promotion) -> None:
        self.promotion = promotion
        self.started = self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        steps = self.promotion.steps
        steps[step] = round(steps.get(step, 0.0) + now - self._last, 4)
        self._last = now
        self.promotion.seconds = round(now - self.started, 4)


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
        resident: int = 1,
        tenant: str | None = None,
    ) -> None:
        """``tenant``: a named tenant's adapters are ``mem-<tenant>-vN`` (None: ``mem-vN``)."""
        self.tenant = tenant
        self.routing = routing
        self.threshold = threshold
        self.embedder = embedder or Embedder()
        self.engines = engines
        self.store = store
        self.adapters_dir = adapters_dir
        self.alias = alias
        self.resident = resident
        self.active: Loaded | None = None
        self.last_promotion: Promotion | None = None
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
    async def _load_everywhere(self, version: int, laps: Laps | None = None) -> Loaded:
        laps = laps or Laps(Promotion(version=version))
        name = adapter_name(version, self.tenant)
        if resident := self.loaded.pop(name, None):
            self.loaded[name] = resident  # the most recently used now
            laps.lap("resident")
            return resident
        path = adapter_dir(self.adapters_dir, version)
        manifest = await asyncio.to_thread(verify, path)
        laps.lap("verify")
        for engine in self.engines:
            # One engine that cannot load it blocks the promotion: every engine serves the alias.
            try:
                fresh = await engine.load_adapter(name, str(path.resolve()))
            except EngineError as exc:
                raise EngineError(f"engine {engine.url} cannot load {name}: {exc}") from exc
            if fresh:
                laps.lap("load")
                await engine.chat(name, WARMUP, max_tokens=1)
                laps.lap("warm up")
            else:
                laps.lap("already loaded")  # by the consolidation that evaluated it
        relevance = await asyncio.to_thread(Relevance.load, path, self.threshold)
        laps.lap("routing vectors")
        loaded = Loaded(version, name, path, manifest.created_at, relevance)
        self.loaded[name] = loaded
        return loaded

    def _evict(self) -> None:
        """Unload, once drained, the versions beyond the ``resident`` most recent inactive ones."""
        active = self.active.name if self.active else None
        inactive = [name for name in self.loaded if name != active]
        for name in inactive[: max(0, len(inactive) - self.resident)]:
            self._unload_later(name)

    async def promote(self, version: int) -> Promotion:
        """Serve ``mem-v<version>`` as the alias; versions beyond ``resident`` drain, then unload."""
        promotion = Promotion(version=version)
        laps = Laps(promotion)
        async with self._lock:
            laps.lap("wait for lock")
            new = await self._load_everywhere(version, laps)
            old, self.active = self.active, new
            laps.lap("flip")
            await self.store.set_active_version(version)
            laps.lap("record")
        log.info(
            "promoted %s (was %s) in %.2fs: %s",
            new.name,
            old.name if old else BASE_MODEL_NAME,
            promotion.seconds,
            ", ".join(f"{k} {v:.3f}s" for k, v in promotion.steps.items()),
            extra={"promotion": promotion.model_dump()},
        )
        self.last_promotion = promotion
        self._evict()
        return promotion

    async def deactivate(self) -> None:
        """Serve the base model again (e.g. every consolidated fact was forgotten)."""
        async with self._lock:
            self.active = None
            await self.store.set_active_version(None)
        self._evict()

    async def discard(self, version: int) -> None:
        """Unload a version that will not serve (loaded by a run for evaluation, then failed)."""
        name = adapter_name(version, self.tenant)
        if name in self.loaded:
            return
        await self._unload_everywhere(name)

    async def drop(self, version: int) -> None:
        """Stop serving ``version`` by any name; unload it once its requests finish."""
        name = adapter_name(version, self.tenant)
        self.loaded.pop(name, None)
        async with self._drained:
            await self._drained.wait_for(lambda: self.in_flight[name] == 0)
        await self._unload_everywhere(name)  # loaded for an evaluation, perhaps

    def _unload_later(self, name: str) -> None:
        task = asyncio.create_task(self._unload_when_drained(name), name=f"unload-{name}")
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    async def _unload_when_drained(self, name: str) -> None:
        async with self._drained:
            await self._drained.wait_for(lambda: self.in_flight[name] == 0)
        if self.active and self.active.name == name:
            return  # promoted again meanwhile
        if name in list(self.loaded)[-self.resident - 1 :]:
            return  # used again meanwhile: among the resident ones now
        self.loaded.pop(name, None)
        await self._unload_everywhere(name)

    async def _unload_everywhere(self, name: str) -> None:
        for engine in self.engines:
            try:
                await engine.unload_adapter(name)
            except Exception:
                log.warning("unloading %s failed", name, exc_info=True)

    async def reconcile(self, engine: EngineClient) -> None:
        """Load on ``engine`` every version memoryd serves that it does not report loaded.

        An engine that restarted lost its adapters; the active one first. A load
        that fails raises: the engine must not take requests for the alias.
        """
        reported = set(await engine.loaded_models())
        names = [n for n in reversed(self.loaded) if n not in reported]
        active = self.active
        for name in sorted(names, key=lambda n: active is None or n != active.name):
            loaded = self.loaded.get(name)
            if loaded is None:
                continue  # unloaded meanwhile
            log.warning("engine %s lacks %s: loading it again", engine.url, name)
            if await engine.load_adapter(name, str(loaded.path.resolve())):
                await engine.chat(name, WARMUP, max_tokens=1)

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
