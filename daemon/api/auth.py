"""The admin token, as a Bearer header (API, CLI) or the dashboard's cookie (a browser)."""

from __future__ import annotations

import hmac

from fastapi import Request

COOKIE = "memoryd_admin"


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def presented(request: Request, cookie: bool) -> str | None:
    """The token the request carries; the cookie counts only where a browser is served."""
    return bearer(request) or (request.cookies.get(COOKIE) if cookie else None)


def accepted(token: str, keys: list[str]) -> bool:
    return any(hmac.compare_digest(token, k) for k in keys)
