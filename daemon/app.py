"""The FastAPI application: routers, auth, OpenAI-format errors, and the services' lifespan."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from daemon import services as lifecycle
from daemon.api import admin, memory, public
from daemon.api.errors import (
    APIError,
    api_error_handler,
    http_error_handler,
    validation_error_handler,
)
from daemon.config import Settings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _check(tokens: Callable[[], list[str]], what: str) -> Callable[[Request], Awaitable[None]]:
    """Bearer auth; the accepted tokens are read per request (SIGHUP can change them)."""

    async def dependency(request: Request) -> None:
        keys = tokens()
        if not keys:
            return
        token = _bearer(request)
        if token is None:
            raise APIError(
                401, f"{what} needs an API key: Authorization: Bearer <key>", code="missing_api_key"
            )
        if not any(hmac.compare_digest(token, k) for k in keys):
            raise APIError(401 if what == "/v1" else 403, "invalid API key", code="invalid_api_key")

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

    app.include_router(
        public.router, dependencies=[Depends(_check(lambda: server.api_keys, "/v1"))]
    )
    app.include_router(admin.router, dependencies=[Depends(_check(admin_keys, "/admin"))])
    app.include_router(memory.router, dependencies=[Depends(_check(admin_keys, "/admin"))])
    app.include_router(admin.health)
    app.add_api_route(
        "/metrics",
        admin.metrics,
        include_in_schema=False,
        dependencies=[Depends(_check(admin_keys, "/metrics"))],
    )
    return app
