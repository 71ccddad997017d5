"""The FastAPI application: routers, auth, OpenAI-format errors, and the services' lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from daemon import services as lifecycle
from daemon.api import admin, auth, feed, memory, public, tenancy, ui
from daemon.api import tenants as tenants_api
from daemon.api.errors import (
    APIError,
    api_error_handler,
    http_error_handler,
    validation_error_handler,
)
from daemon.config import Settings


def _check(
    tokens: Callable[[], list[str]], what: str, cookie: bool = False
) -> Callable[[Request], Awaitable[None]]:
    """The operator's Bearer token (/metrics); read per request (SIGHUP can change it).

    /v1 and /admin name a tenant as well: daemon.api.tenancy.

    ``cookie``: the dashboard's cookie counts too (a browser's event feed cannot send headers).
    """

    async def dependency(request: Request) -> None:
        keys = tokens()
        if not keys:
            return
        token = auth.presented(request, cookie)
        if token is None:
            raise APIError(
                401, f"{what} needs an API key: Authorization: Bearer <key>", code="missing_api_key"
            )
        if not auth.accepted(token, keys):
            raise APIError(403, "invalid API key", code="invalid_api_key")

    return dependency


def create_app(
    settings: Settings, on_ready: Callable[[lifecycle.Services], None] = lambda svc: None
) -> FastAPI:
    """The app; ``on_ready`` is handed the services once the lifespan has started them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = await lifecycle.start(settings)
        app.state.services = svc
        on_ready(svc)
        try:
            yield
        finally:
            await lifecycle.stop(svc)

    app = FastAPI(title="memoryd", version="0.1.0", lifespan=lifespan)
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    server = settings.server

    def admin_keys() -> list[str]:
        return [server.admin_token] if server.admin_token else []

    app.include_router(public.router, dependencies=[Depends(tenancy.public(settings))])
    scoped = Depends(tenancy.admin(settings, "/admin"))
    app.include_router(admin.router, dependencies=[scoped])
    app.include_router(memory.router, dependencies=[scoped])
    app.include_router(tenants_api.router, dependencies=[scoped])
    app.include_router(
        feed.router, dependencies=[Depends(tenancy.admin(settings, "/admin", cookie=True))]
    )
    app.include_router(admin.health)
    ui.mount(app, admin_keys)
    app.add_api_route(
        "/metrics",
        admin.metrics,
        include_in_schema=False,
        dependencies=[Depends(_check(admin_keys, "/metrics"))],
    )
    return app
