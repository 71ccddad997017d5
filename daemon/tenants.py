"""Tenants at run time: each one's memory, adapters and consolidator, and fair turns between them.

A tenant is what an API key maps to (config ``tenants``; without keys every
request is the default tenant's). Each has its own Store (its keys,
daemon.scope), its own Swapper (the ``memoryd`` alias means its active
adapter; other tenants' adapters are unknown names to it) and its own
Consolidator. The engine, Redis, the observer and the idle clock are shared:
one consolidation runs at a time, and ``Rotation`` hands the turns out
round-robin among tenants with something to learn, so a tenant whose memory
keeps changing cannot starve the others.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass

from pydantic import BaseModel
from redis.asyncio import Redis

from daemon.activity import Activity
from daemon.config import Settings, tenant_of
from daemon.consolidation import AlreadyRunning, Consolidator, Phase
from daemon.engine.adapters import versions_on_disk
from daemon.engine.client import EngineClient
from daemon.engine.swap import Swapper
from daemon.memory.observer import Observer
from daemon.memory.relevance import Embedder
from daemon.memory.store import Store
from daemon.metrics import Metrics
from daemon.scope import Scope, glob_escape, user_scope

log = logging.getLogger("memoryd.tenants")


@dataclass
class Tenant:
    scope: Scope
    store: Store
    swapper: Swapper
    consolidator: Consolidator

    @property
    def name(self) -> str:
        return self.scope.tenant


@dataclass(frozen=True)
class Shared:
    """What every tenant's parts are built from: one of each for the whole daemon."""

    settings: Settings
    redis: Redis
    redis_url: str
    engines: list[EngineClient]
    activity: Activity
    metrics: Metrics
    embedder: Embedder


def build(shared: Shared, name: str) -> Tenant:
    """A tenant's store, swapper and consolidator, not yet restored (see ``restore``)."""
    settings = shared.settings
    scope = Scope.of(settings, name)
    store = Store(shared.redis, scope.prefix)
    swapper = Swapper(
        shared.engines,
        store,
        scope.adapters_dir,
        settings.served_model_name,
        settings.routing,
        settings.routing_threshold,
        embedder=shared.embedder,
        # vLLM holds max_loras at once: the active version, one being evaluated, the rest resident.
        resident=max(0, settings.engine.max_loras - 2),
        tenant=scope.tenant if scope.named else None,
    )
    consolidator = Consolidator(
        settings,
        store,
        swapper,
        shared.activity,
        shared.metrics,
        shared.redis_url,
        shared.engines[0].url,
        scope,
    )
    return Tenant(scope, store, swapper, consolidator)


class Rotation:
    """The scheduler's one job for every tenant: a run in progress first, then turns in order."""

    def __init__(self, tenants: dict[str, Tenant]) -> None:
        self.tenants = tenants  # the daemon's own dict: a wiped tenant's fresh parts are seen
        self.last: str | None = None  # whose run started last; the next turn is the one after

    async def tick(self) -> None:
        busy = [t for t in self.tenants.values() if t.consolidator.phase != Phase.idle]
        for tenant in busy:
            await self._tick(tenant)  # resumes a paused run once idle
        if busy:
            return
        names = list(self.tenants)
        start = names.index(self.last) + 1 if self.last in names else 0
        for name in names[start:] + names[:start]:
            tenant = self.tenants[name]
            await self._tick(tenant)
            if tenant.consolidator.phase != Phase.idle:
                self.last = name
                return

    @staticmethod
    async def _tick(tenant: Tenant) -> None:
        """One tenant's failure (its memory unreadable) must not stop the others' turns."""
        try:
            await tenant.consolidator.tick()
        except Exception:
            log.exception("consolidation check of tenant %s failed", tenant.name)

    async def start(self, name: str, trigger: str) -> int:
        """A run for one tenant now; refused while any tenant's run goes on (one at a time)."""
        for other, tenant in self.tenants.items():
            running = tenant.consolidator
            if running.phase != Phase.idle:
                raise AlreadyRunning(
                    f"consolidation {running.run_id} of tenant {other} is {running.phase.value}"
                )
        run_id = await self.tenants[name].consolidator.start(trigger)
        self.last = name
        return run_id

    def on_chat(self) -> None:
        for tenant in self.tenants.values():
            tenant.consolidator.on_chat()

    async def recover(self) -> None:
        for tenant in self.tenants.values():
            await tenant.consolidator.recover()

    async def stop(self) -> None:
        await asyncio.gather(*(t.consolidator.stop() for t in self.tenants.values()))

    async def restore(self) -> None:
        """After the engine (re)starts: every tenant's active adapter loaded again."""
        for tenant in list(self.tenants.values()):
            await tenant.swapper.restore()

    async def reconcile(self, engine: EngineClient) -> None:
        """An upstream that passes its probe again gets every tenant's served adapters back."""
        for tenant in list(self.tenants.values()):
            await tenant.swapper.reconcile(engine)


async def scoped(
    shared: Shared, tenants: dict[str, Tenant], own: Tenant, user: str | None
) -> Tenant:
    """The end user's own scope within ``own`` where its tenant is ``per_user``, built on first use."""
    if not user or not shared.settings.per_user(own.name):
        return own
    name = user_scope(own.name, user)
    found = tenants.get(name)
    if found is None:
        found = tenants[name] = build(shared, name)  # seen by Rotation from now on
        await found.swapper.restore()
    return found


class Wiped(BaseModel):
    tenant: str
    keys: int
    adapters_unloaded: list[str]
    directory: str
    users: int = 0  # end users' scopes of a per_user tenant, wiped with it


async def wipe(shared: Shared, tenants: dict[str, Tenant], observer: Observer, name: str) -> Wiped:
    """Remove everything tenant ``name`` (and each of its end users' scopes) left.

    Its runs are stopped, observations already queued are written first (so
    none lands after the wipe), its adapters are unloaded from every engine,
    every Redis key under its prefixes is deleted and its directories removed.
    The tenant gets fresh, empty parts; its users' scopes are gone.
    """
    old = tenants[name]
    if not old.scope.named:
        raise ValueError("the default tenant is not wiped; forget its passages instead")
    users = [n for n in tenants if tenant_of(n) == name and n != name]
    for scope in [old, *(tenants[u] for u in users)]:
        await scope.consolidator.stop()
    try:
        await asyncio.wait_for(observer.queue.join(), 30)
    except asyncio.TimeoutError:
        log.warning("wiping %s with observations still queued", name)
    keys, unloaded = await _erase(shared, old)
    for user in users:
        more_keys, more = await _erase(shared, tenants.pop(user))
        keys, unloaded = keys + more_keys, unloaded + more
    tenants[name] = build(shared, name)
    log.warning("tenant %s wiped: %d keys, adapters %s", name, keys, unloaded or "none")
    return Wiped(
        tenant=name,
        keys=keys,
        adapters_unloaded=unloaded,
        directory=str(old.scope.root),
        users=len(users),
    )


async def _erase(shared: Shared, old: Tenant) -> tuple[int, list[str]]:
    """One scope's adapters unloaded, keys deleted, directory removed: (keys, adapters)."""
    names = set(old.swapper.loaded) | {
        old.scope.adapter_name(v) for v in versions_on_disk(old.scope.adapters_dir)
    }
    old.swapper.active = None
    old.swapper.loaded.clear()
    for engine in shared.engines:
        for adapter in sorted(names):
            try:
                await engine.unload_adapter(adapter)
            except Exception:
                log.debug("%s was not loaded on %s", adapter, engine.url)
    deleted = 0
    batch: list[str] = []
    async for key in shared.redis.scan_iter(match=glob_escape(old.scope.prefix) + ":*", count=1000):
        batch.append(str(key))
        if len(batch) >= 500:
            deleted += int(await shared.redis.delete(*batch))
            batch.clear()
    if batch:
        deleted += int(await shared.redis.delete(*batch))
    await asyncio.to_thread(shutil.rmtree, old.scope.root, True)
    return deleted, sorted(names)
