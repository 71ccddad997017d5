"""Errors in the OpenAI error format, for every refusal memoryd makes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


def error_type(status: int) -> str:
    """The ``type`` OpenAI's API gives a refusal with this status."""
    if status == 429:
        return "requests"  # OpenAI's rate-limit type; its code says which limit
    return "server_error" if status >= 500 else "invalid_request_error"


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(
            error=ErrorBody(message=message, type=error_type(status), param=param, code=code)
        )
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body.model_dump(), status_code=self.status, headers=self.headers)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return refused(request, exc)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return refused(request, APIError(exc.status_code, str(exc.detail)))


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return refused(request, validation_error(exc.errors()))


def refused(request: Request, error: APIError) -> JSONResponse:
    """The error response, counted in memoryd_refusals_total (once the daemon is up)."""
    svc = getattr(request.app.state, "services", None)
    if svc is not None:
        svc.metrics.refusals.labels(str(error.status), error.body.error.code or "").inc()
    return error.response()


def validation_error(errors: Sequence[Any]) -> APIError:
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = f"{param}: {first['msg']}" if param else first["msg"]
    return APIError(400, message, param=param, code="invalid_value")
