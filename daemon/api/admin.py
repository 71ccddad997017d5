"""The operator's API: status, consolidation runs and their log, adapters, health, metrics.

What memory holds (passages and facts) is in daemon.api.memory.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from daemon.api import feed
from daemon.api.errors import APIError
from daemon.api.feed import Event
from daemon.api.tenancy import tenant
from daemon.consolidation import AlreadyRunning, Phase
from daemon.engine.adapters import (
    AdapterInvalid,
    adapter_dir,
    verify,
    versions_on_disk,
)
from daemon.engine.client import BASE_MODEL_NAME, EngineError
from daemon.engine.swap import Promotion
from daemon.memory.records import Consolidation, FactStatus, RunState
from daemon.services import Services

router = APIRouter(prefix="/admin")
health = APIRouter()


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


class ReplicaStatus(BaseModel):
    url: str
    healthy: bool
    outstanding: int  # requests in flight on it
    pid: int | None  # managed replicas only
    restarts: int


class EngineStatus(BaseModel):
    upstream: list[str]
    managed: bool
    ready: bool
    restarts: int  # of every managed replica
    pid: int | None  # the first managed replica's
    replicas: list[ReplicaStatus]


def engine_status(svc: Services) -> EngineStatus:
    managed = {m.client.url: m for m in svc.managed}
    replicas = [
        ReplicaStatus(
            url=r.client.url,
            healthy=r.healthy,
            outstanding=r.outstanding,
            pid=m.pid if (m := managed.get(r.client.url)) else None,
            restarts=m.restarts if m else 0,
        )
        for r in svc.pool.replicas
    ]
    return EngineStatus(
        upstream=[r.url for r in replicas],
        managed=bool(svc.managed),
        ready=svc.engines_ready(),
        restarts=sum(r.restarts for r in replicas),
        pid=replicas[0].pid if svc.managed else None,
        replicas=replicas,
    )


class ConsolidationStatus(BaseModel):
    state: str
    run: int | None
    pid: int | None
    enabled: bool
    idle_for_s: float
    idle_after_s: float
    in_flight: int


class RedisStatus(BaseModel):
    ok: bool
    private: bool
    pid: int | None
    restarts: int


class Status(BaseModel):
    tenant: str
    served_model_name: str
    active_adapter: str | None
    active_version: int | None
    loaded_adapters: list[str]
    engine: EngineStatus
    consolidation: ConsolidationStatus
    facts: int
    passages: int
    redis: RedisStatus
    observer: dict[str, int]
    redacted: dict[str, int] = Field(description="redactions by kind (counts, never values)")
    uptime_s: float


class ConsolidationList(BaseModel):
    consolidations: list[Consolidation]


class Started(BaseModel):
    run: int
    state: RunState = RunState.queued


@router.get("/status", response_model=Status)
async def status(request: Request) -> Status:
    svc, own = services(request), tenant(request)
    try:
        redis_ok = await own.store.ping()
        facts, passages = await own.store.count_facts(), await own.store.count_passages()
    except Exception:
        redis_ok, facts, passages = False, -1, -1
    active = own.swapper.active
    return Status(
        tenant=own.name,
        served_model_name=svc.settings.served_model_name,
        active_adapter=active.name if active else None,
        active_version=active.version if active else None,
        loaded_adapters=sorted(own.swapper.loaded),
        engine=engine_status(svc),
        consolidation=ConsolidationStatus(
            state=own.consolidator.phase.value,
            run=own.consolidator.run_id,
            pid=own.consolidator.pid,
            enabled=own.consolidator.enabled,
            idle_for_s=round(svc.activity.idle_for(), 1),
            idle_after_s=svc.settings.consolidation.idle_after_s,
            in_flight=svc.activity.in_flight,
        ),
        facts=facts,
        passages=passages,
        redis=RedisStatus(
            ok=redis_ok,
            private=svc.private_redis is not None,
            pid=svc.private_redis.pid if svc.private_redis else None,
            restarts=svc.private_redis.restarts if svc.private_redis else 0,
        ),
        observer={**svc.observer.stats.model_dump(), "queued": svc.observer.queue.qsize()},
        redacted=dict(svc.observer.redacted),
        uptime_s=round(time.time() - svc.started_at, 1),
    )


@router.get("/consolidations", response_model=ConsolidationList)
async def consolidations(
    request: Request, limit: int = Query(50, ge=1, le=1000)
) -> ConsolidationList:
    return ConsolidationList(consolidations=await tenant(request).store.runs(limit))


class EventList(BaseModel):
    events: list[Event]
    last_id: str


@router.get("/events", response_model=EventList)
async def events(
    request: Request,
    after: str = Query("0", description="stream id of the last event already seen"),
    run: int | None = Query(None, description="only this run's events"),
) -> EventList:
    """The consolidation log, oldest first, a page at a time (live: /admin/events/stream)."""
    out = await feed.page(tenant(request).store, after)
    last = out[-1].id if out else after
    return EventList(events=[e for e in out if run is None or e.run == run], last_id=last)


@router.get("/consolidations/{run_id}", response_model=Consolidation)
async def consolidation(request: Request, run_id: int) -> Consolidation:
    run = await tenant(request).store.run(run_id)
    if run is None:
        raise APIError(404, f"no consolidation {run_id}", param="run_id", code="run_not_found")
    return run


@router.post("/consolidate", response_model=Started, status_code=202)
async def consolidate(request: Request) -> JSONResponse:
    try:
        run_id = await services(request).rotation.start(tenant(request).name, "operator")
    except AlreadyRunning as exc:
        raise APIError(409, str(exc), code="consolidation_running") from exc
    return JSONResponse(Started(run=run_id).model_dump(mode="json"), status_code=202)


class AdapterInfo(BaseModel):
    version: int
    name: str
    path: str
    active: bool
    loaded: bool
    state: str | None
    created_at: float | None
    facts: int | None
    metrics: dict[str, float]
    valid: bool
    problem: str | None = None
    statements: list[str] = Field(default_factory=list, description="what it was trained on")


class AdapterList(BaseModel):
    active: str | None
    adapters: list[AdapterInfo]
    last_promotion: Promotion | None = None  # the latest promotion's steps and their seconds


@router.get("/adapters", response_model=AdapterList)
async def adapters(request: Request) -> AdapterList:
    own = tenant(request)
    adapters_dir = own.scope.adapters_dir
    out = []
    for version in reversed(versions_on_disk(adapters_dir)):
        path = adapter_dir(adapters_dir, version)
        run = await own.store.run(version)
        try:
            manifest = await asyncio.to_thread(verify, path)
            created, facts_n, metrics, problem = (
                manifest.created_at,
                len(manifest.fact_ids),
                manifest.metrics,
                None,
            )
            statements = manifest.facts
        except AdapterInvalid as exc:
            created, facts_n, metrics, problem = None, None, {}, str(exc)
            statements = []
        name = own.scope.adapter_name(version)
        out.append(
            AdapterInfo(
                version=version,
                name=name,
                path=str(path),
                active=bool(own.swapper.active and own.swapper.active.version == version),
                loaded=name in own.swapper.loaded,
                state=run.state.value if run else None,
                created_at=created,
                facts=facts_n,
                metrics=run.metrics if run else metrics,
                valid=problem is None,
                problem=problem,
                statements=statements,
            )
        )
    active = own.swapper.active
    return AdapterList(
        active=active.name if active else None,
        adapters=out,
        last_promotion=own.swapper.last_promotion,
    )


@router.post("/adapters/{version}/activate", response_model=AdapterList)
async def activate(request: Request, version: int, force: bool = False) -> AdapterList:
    """Roll back (or forward) to an adapter on disk; one never passed needs ``force``."""
    own = tenant(request)
    run = await own.store.run(version)
    if run is not None and run.state in (RunState.rejected, RunState.failed) and not force:
        why = "; ".join(run.reasons[:2]) or run.error or "no verdict"
        name = own.scope.adapter_name(version)
        raise APIError(409, f"{name} was {run.state.value}: {why}", code="adapter_rejected")
    try:
        await own.swapper.promote(version)
    except AdapterInvalid as exc:
        raise APIError(409, str(exc), code="adapter_invalid") from exc
    except EngineError as exc:
        raise APIError(502, str(exc), code="engine_refused_adapter") from exc
    await own.store.event(version, "activated", by="operator")
    return await adapters(request)


class Paused(BaseModel):
    enabled: bool


@router.post("/pause", response_model=Paused)
async def pause(request: Request) -> Paused:
    """Stop starting consolidations on idle (a running one finishes)."""
    tenant(request).consolidator.enabled = False
    return Paused(enabled=False)


@router.post("/resume", response_model=Paused)
async def resume(request: Request) -> Paused:
    tenant(request).consolidator.enabled = True
    return Paused(enabled=True)


async def metrics(request: Request) -> Response:
    svc = services(request)
    m = svc.metrics
    m.observer_queue.set(svc.observer.queue.qsize())
    m.active_version.set(svc.swapper.active.version if svc.swapper.active else 0)
    m.in_flight.set(svc.activity.in_flight)
    m.engine_ready.set(1 if svc.engines_ready() else 0)
    for phase in Phase:
        m.state.labels(phase.value).set(1 if svc.consolidator.phase == phase else 0)
    try:
        counts = Counter(f.status.value for f in await svc.store.facts(limit=100_000))
        for status in FactStatus:
            m.facts.labels(status.value).set(counts.get(status.value, 0))
    except Exception:
        pass  # Redis down: the other metrics still matter
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    svc = services(request)
    ready = svc.engines_ready()
    body = {
        "ready": ready,
        "engine": "ready" if ready else "restarting",
        "model": svc.swapper.active.name if svc.swapper.active else BASE_MODEL_NAME,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
