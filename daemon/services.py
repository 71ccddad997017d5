"""The daemon's parts, started in dependency order and stopped in reverse.

Redis (private child or URL) -> model -> vLLM engines (managed replicas or
external upstreams) -> each tenant's swapper (restores its active adapter) ->
observer -> consolidators + scheduler.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from redis.asyncio import Redis

from daemon.activity import Activity
from daemon.bundled_model import bundled_model_dir, is_prepared
from daemon.config import DEFAULT_TENANT, Settings
from daemon.consolidation import Consolidator
from daemon.engine.client import EngineClient
from daemon.engine.pool import Pool
from daemon.engine.process import ManagedEngine
from daemon.engine.swap import Swapper
from daemon.memory.language import Language
from daemon.memory.observer import Observer
from daemon.memory.relevance import Embedder
from daemon.memory.store import Store, connect
from daemon.metrics import Metrics
from daemon.redis_server import PrivateRedis
from daemon.scope import all_scopes
from daemon.tenants import Rotation, Shared, Tenant, build

log = logging.getLogger("memoryd")


@dataclass
class Services:
    """``store``, ``swapper`` and ``consolidator`` are the default tenant's (``tenants`` has all)."""

    settings: Settings
    store: Store
    redis: Redis
    redis_url: str
    engines: list[EngineClient]
    pool: Pool
    swapper: Swapper
    observer: Observer
    activity: Activity
    consolidator: Consolidator
    http: aiohttp.ClientSession
    model_dir: Path
    metrics: Metrics
    shared: Shared
    tenants: dict[str, Tenant]
    rotation: Rotation
    managed: list[ManagedEngine] = field(default_factory=list)
    private_redis: PrivateRedis | None = None
    scheduler: AsyncIOScheduler | None = None
    started_at: float = field(default_factory=time.time)

    def engines_ready(self) -> bool:
        return self.pool.any_healthy()


async def prepare_model(settings: Settings) -> Path:
    if settings.engine.model:
        return Path(settings.engine.model)
    target = bundled_model_dir(settings.models_dir)
    if not is_prepared(target):
        log.info("preparing the bundled model in %s (once)", target)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.bundled_model", str(target)
        )
        if await proc.wait() != 0:
            raise RuntimeError("preparing the bundled model failed")
    return target


async def start(settings: Settings) -> Services:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    private = None
    redis_url = settings.redis.url
    if not redis_url:
        private = PrivateRedis(settings.state_dir)
        await private.start()
        redis_url = private.url
    redis = connect(redis_url, settings.redis)

    model_dir = await prepare_model(settings)
    managed = []
    if settings.engine.upstreams:
        engines = [
            EngineClient(u, settings.server.upstream_timeout_s) for u in settings.engine.upstreams
        ]
    else:
        logs = settings.state_dir / "logs"
        managed = [
            ManagedEngine(settings.engine, model_dir, logs, i)
            for i in range(settings.engine.replicas)
        ]
        try:
            await asyncio.gather(*(m.start() for m in managed))
        except BaseException:  # one that failed to start: the others do not outlive it
            await asyncio.gather(*(m.stop() for m in managed), return_exceptions=True)
            raise
        engines = [m.client for m in managed]

    activity = Activity()
    metrics = Metrics()
    shared = Shared(settings, redis, redis_url, engines, activity, metrics, Embedder())
    tenants = {s.tenant: build(shared, s.tenant) for s in await all_scopes(redis, settings)}
    rotation = Rotation(tenants)
    default = tenants[DEFAULT_TENANT]
    await rotation.restore()
    pool = Pool(engines, settings.engine.health_interval_s)
    for replica, engine in zip(pool.replicas, managed, strict=False):
        pool.follow(replica, engine, rotation.reconcile)
    if not managed:
        pool.watch(rotation.reconcile)
    if private:
        private.supervise()

    activity.on_busy = rotation.on_chat
    await rotation.recover()
    observer = Observer(default.store, settings.observer, Language())
    observer.start()
    metrics.observe(lambda: observer.stats, lambda: observer.redacted)

    scheduler = AsyncIOScheduler()
    scheduler.add_job(
        rotation.tick,
        "interval",
        seconds=settings.consolidation.check_interval_s,
        max_instances=1,
        coalesce=True,
        id="idle-check",
    )
    scheduler.start()

    # The request path's client: aiohttp's C parser costs far less per request than httpx.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000), auto_decompress=False)
    return Services(
        settings=settings,
        store=default.store,
        redis=redis,
        redis_url=redis_url,
        engines=engines,
        pool=pool,
        swapper=default.swapper,
        observer=observer,
        activity=activity,
        consolidator=default.consolidator,
        http=http,
        model_dir=model_dir,
        metrics=metrics,
        shared=shared,
        tenants=tenants,
        rotation=rotation,
        managed=managed,
        private_redis=private,
        scheduler=scheduler,
    )


async def stop(svc: Services) -> None:
    if svc.scheduler:
        svc.scheduler.shutdown(wait=False)
    await svc.rotation.stop()
    try:
        await asyncio.wait_for(svc.observer.stop(), 10)
    except asyncio.TimeoutError:
        log.warning("observer queue not drained: %s observations lost", svc.observer.queue.qsize())
    await svc.http.close()
    await asyncio.gather(*(m.stop() for m in svc.managed))
    await svc.pool.stop()
    await svc.redis.aclose()
    if svc.private_redis:
        await svc.private_redis.stop()
