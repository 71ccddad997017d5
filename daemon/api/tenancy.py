"""Whose request it is: the tenant an API key or admin token names, checked on every request.

/v1: the Bearer key names the tenant (config ``tenants``, and ``server.api_keys``
for the default tenant); without any keys configured every request is the
default tenant's. /admin: the operator's token (``server.admin_token``) may
choose any tenant with ``?tenant=NAME`` or the header ``X-Memoryd-Tenant: NAME``
(default: the default tenant; the dashboard shows the default tenant); a
tenant's own ``admin_token`` reaches only that tenant and its end users'
scopes (``T.<hash>``, a ``per_user`` tenant's; 403 otherwise). The tokens are
read per request, so SIGHUP can change them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Header, Query, Request

from daemon.api import auth
from daemon.api.errors import APIError
from daemon.config import DEFAULT_TENANT, Settings, tenant_of
from daemon.services import Services
from daemon.tenants import Tenant

TENANT_QUERY = Query(
    None, description="whose memory (operator token only; a tenant token means its own)"
)
TENANT_HEADER = Header(None, description="the same as ?tenant=, for clients that send headers")


def tenant(request: Request) -> Tenant:
    """The tenant the request was admitted for (set by one of the dependencies below)."""
    svc: Services = request.app.state.services
    return svc.tenants[getattr(request.state, "tenant", DEFAULT_TENANT)]


def principal(request: Request) -> str | None:
    """The tenant an admin token is limited to; None for the operator (every tenant)."""
    found: str | None = getattr(request.state, "principal", None)
    return found


def public(settings: Settings) -> Callable[[Request], Awaitable[None]]:
    async def dependency(request: Request) -> None:
        keys = settings.api_key_tenants()
        if not keys:
            request.state.tenant = DEFAULT_TENANT
            return
        token = auth.bearer(request)
        if token is None:
            raise APIError(
                401, "/v1 needs an API key: Authorization: Bearer <key>", code="missing_api_key"
            )
        found = next((name for key, name in keys.items() if auth.accepted(token, [key])), None)
        if found is None:
            raise APIError(401, "invalid API key", code="invalid_api_key")
        request.state.tenant = found

    return dependency


def admin(
    settings: Settings, what: str, cookie: bool = False
) -> Callable[[Request, str | None, str | None], Awaitable[None]]:
    """``cookie``: the dashboard's cookie counts too (a browser's event feed cannot send headers)."""

    async def dependency(
        request: Request,
        tenant: str | None = TENANT_QUERY,
        x_memoryd_tenant: str | None = TENANT_HEADER,
    ) -> None:
        tokens = settings.admin_tokens()
        limited: str | None = None
        if tokens:
            token = auth.presented(request, cookie)
            if token is None:
                raise APIError(
                    401,
                    f"{what} needs an API key: Authorization: Bearer <key>",
                    code="missing_api_key",
                )
            match = [t for t in tokens if auth.accepted(token, [t])]
            if not match:
                raise APIError(403, "invalid API key", code="invalid_api_key")
            limited = tokens[match[0]]
        chosen = tenant or x_memoryd_tenant or limited or DEFAULT_TENANT
        if limited is not None and tenant_of(chosen) != limited:
            raise APIError(
                403, f"this token is tenant {limited}'s, not {chosen}'s", code="tenant_forbidden"
            )
        svc: Services = request.app.state.services
        if chosen not in svc.tenants:
            raise APIError(404, f"no tenant {chosen}", param="tenant", code="tenant_not_found")
        request.state.tenant, request.state.principal = chosen, limited

    return dependency
