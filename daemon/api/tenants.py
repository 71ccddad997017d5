"""Tenants for the operator: who they are, what each holds, and wiping one.

The operator's token sees every tenant; a tenant's own admin token sees, and
may wipe, only itself (daemon.api.tenancy).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from daemon.api.errors import APIError
from daemon.api.tenancy import principal
from daemon.config import tenant_of
from daemon.services import Services
from daemon.tenants import Wiped, wipe

router = APIRouter(prefix="/admin")


class TenantInfo(BaseModel):
    name: str
    learn: bool
    api_keys: int  # how many, never the keys
    prefix: str
    active_adapter: str | None
    consolidation: str
    passages: int
    facts: int


class TenantList(BaseModel):
    tenants: list[TenantInfo]


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def allowed(request: Request, name: str) -> None:
    svc = services(request)
    limited = principal(request)
    if limited is not None and tenant_of(name) != limited:
        raise APIError(
            403, f"this token is tenant {limited}'s, not {name}'s", code="tenant_forbidden"
        )
    if name not in svc.tenants:
        raise APIError(404, f"no tenant {name}", param="name", code="tenant_not_found")


@router.get("/tenants", response_model=TenantList)
async def tenants(request: Request) -> TenantList:
    svc = services(request)
    limited = principal(request)
    out = []
    for name, t in svc.tenants.items():
        if limited is not None and tenant_of(name) != limited:
            continue
        config = svc.settings.tenant(name)
        active = t.swapper.active
        out.append(
            TenantInfo(
                name=name,
                learn=config.learn,
                api_keys=len(config.api_keys),
                prefix=t.scope.prefix,
                active_adapter=active.name if active else None,
                consolidation=t.consolidator.phase.value,
                passages=await t.store.count_passages(),
                facts=await t.store.count_facts(),
            )
        )
    return TenantList(tenants=out)


@router.post("/tenants/{name}/wipe", response_model=Wiped)
async def wipe_tenant(request: Request, name: str) -> Wiped:
    """Everything the tenant left: Redis keys, runs, logs, adapters (unloaded from vLLM)."""
    allowed(request, name)
    svc = services(request)
    try:
        return await wipe(svc.shared, svc.tenants, svc.observer, name)
    except ValueError as exc:
        raise APIError(400, str(exc), param="name", code="tenant_not_wipeable") from exc
