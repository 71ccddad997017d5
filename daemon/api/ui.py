"""The operator's dashboard under /ui: memory, consolidation runs, adapters.

Server-rendered Jinja2 pages; htmx swaps the fragments that actions change, and
the consolidation page follows the same event feed as the CLI
(/admin/events/stream). htmx and uPlot are shipped in static/: nothing is
fetched from elsewhere at run time.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from daemon.api import admin, auth, memory
from daemon.api.errors import APIError
from daemon.memory.records import Consolidation, Fact
from daemon.services import Services

HERE = Path(__file__).parent
REDACTED = re.compile(r"\[REDACTED:\w+\]")
router = APIRouter(prefix="/ui", include_in_schema=False)


class LoginNeeded(Exception):
    """A browser without the admin token's cookie: it is sent to the login form."""


def mount(app: FastAPI, admin_keys: Callable[[], list[str]]) -> None:
    """The dashboard's routes, static files and templates, behind the admin token."""
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    app.state.templates.env.filters["when"] = when
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.add_api_route("/ui/login", login_form, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/login", login, methods=["POST"], include_in_schema=False)
    app.include_router(router, dependencies=[Depends(signed_in(admin_keys))])
    app.add_exception_handler(LoginNeeded, to_login)


def signed_in(keys: Callable[[], list[str]]) -> Callable[[Request], Awaitable[None]]:
    async def dependency(request: Request) -> None:
        token = auth.presented(request, cookie=True)
        if keys() and not (token and auth.accepted(token, keys())):
            raise LoginNeeded

    return dependency


async def to_login(request: Request, _: Exception) -> Response:
    if request.headers.get("hx-request"):
        return Response(status_code=401, headers={"HX-Redirect": "/ui/login"})
    return RedirectResponse("/ui/login", status_code=303)


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def render(request: Request, name: str, **context: Any) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, name, context)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def login_form(request: Request) -> HTMLResponse:
    return render(request, "login.html", page="login", problem=None)


async def login(request: Request) -> Response:
    """Check the admin token once; the browser keeps it in a same-site, script-proof cookie."""
    token = parse_qs((await request.body()).decode()).get("token", [""])[0]
    keys = [services(request).settings.server.admin_token]
    if not keys[0] or not auth.accepted(token, keys):
        return render(request, "login.html", page="login", problem="That is not the admin token.")
    response = RedirectResponse("/ui/memory", status_code=303)
    response.set_cookie(auth.COOKIE, token, httponly=True, samesite="strict")
    return response


@router.get("")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/memory", status_code=303)


# --- memory -------------------------------------------------------------------
@router.get("/memory", response_class=HTMLResponse)
async def memory_page(request: Request, q: str = Query("")) -> HTMLResponse:
    store = services(request).store
    passages = await store.passages(limit=500)
    return render(
        request,
        "memory.html",
        page="memory",
        q=q,
        facts=await matching_facts(request, q),
        passages=passages,
        redactions={p.id: len(REDACTED.findall(p.text)) for p in passages},
    )


@router.get("/memory/facts", response_class=HTMLResponse)
async def facts_fragment(request: Request, q: str = Query("")) -> HTMLResponse:
    """The facts table alone: what the search box swaps in."""
    return render(request, "_facts.html", facts=await matching_facts(request, q), q=q)


async def matching_facts(request: Request, q: str) -> list[Fact]:
    listed = await memory.facts(request, limit=10_000, offset=0, status=None, q=q or None)
    return listed.facts


@router.post("/facts/{fact_id}/forget", response_class=HTMLResponse)
async def forget(request: Request, fact_id: str) -> HTMLResponse:
    return render(request, "_fact_row.html", f=await memory.forget(request, fact_id, now=False))


@router.post("/facts/{fact_id}/pin", response_class=HTMLResponse)
async def pin(request: Request, fact_id: str) -> HTMLResponse:
    return render(request, "_fact_row.html", f=await memory.pin(request, fact_id))


@router.post("/facts/{fact_id}/unpin", response_class=HTMLResponse)
async def unpin(request: Request, fact_id: str) -> HTMLResponse:
    return render(request, "_fact_row.html", f=await memory.unpin(request, fact_id))


# --- consolidation --------------------------------------------------------------
@router.get("/consolidation", response_class=HTMLResponse)
async def consolidation_page(request: Request) -> HTMLResponse:
    svc = services(request)
    runs = await svc.store.runs(100)
    current = next((r for r in runs if not r.state.settled), None)
    passages = await svc.store.passages(limit=10_000)
    return render(
        request,
        "consolidation.html",
        page="consolidation",
        runs=runs,
        current=current,
        phase=current.steps[-1].name if current and current.steps else None,
        daemon_phase=svc.consolidator.phase.value,
        trends=trends(runs),
        histogram=sorted(Counter(p.conversations for p in passages).items()),
    )


@router.get("/consolidation/runs", response_class=HTMLResponse)
async def runs_fragment(request: Request) -> HTMLResponse:
    """The timeline alone: swapped in when the feed says a run settled."""
    return render(request, "_runs.html", runs=await services(request).store.runs(100))


def trends(runs: list[Consolidation]) -> dict[str, list[float | None]]:
    """Per finished run, oldest first: the series the dashboard plots."""
    done = [r for r in reversed(runs) if r.state.settled and r.finished_at]
    return {
        "run": [float(r.id) for r in done],
        "held_out": [r.metrics.get("held_out") for r in done],
        "held_out_base": [r.metrics.get("held_out_base") for r in done],
        "retention": [r.metrics.get("retention") for r in done],
        "seconds": [round((r.finished_at or r.started_at) - r.started_at, 1) for r in done],
        "facts": [float(len(r.fact_ids)) for r in done],
    }


# --- adapters -----------------------------------------------------------------
@router.get("/adapters", response_class=HTMLResponse)
async def adapters_page(request: Request) -> HTMLResponse:
    listed = await admin.adapters(request)
    return render(request, "adapters.html", page="adapters", listed=listed, problem=None)


@router.post("/adapters/{version}/activate", response_class=HTMLResponse)
async def activate(request: Request, version: int) -> HTMLResponse:
    """Serve ``version`` (the page asked for confirmation); a refusal is shown, not raised."""
    try:
        listed, problem = await admin.activate(request, version), None
    except APIError as exc:
        listed, problem = await admin.adapters(request), exc.body.error.message
    return render(request, "_adapters.html", listed=listed, problem=problem)
