"""The consolidation event feed: one Redis stream, read as pages or as server-sent events.

The dashboard and ``memoryd consolidations follow`` / ``consolidate --wait`` all
read this one feed, so they show the same phases, steps and ETA.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from redis.exceptions import RedisError

from daemon.api.tenancy import tenant
from daemon.memory.store import Store

router = APIRouter(prefix="/admin")

POLL_S = 0.5
PAGE = 1000
HEARTBEAT_S = 15.0  # a comment line now and then keeps proxies from closing an idle stream


class Event(BaseModel):
    id: str
    run: int
    step: str
    at: float
    detail: dict[str, Any]


def parse(event_id: str, fields: dict[str, str]) -> Event:
    return Event(
        id=event_id,
        run=int(fields["run"]),
        step=fields["step"],
        at=float(fields["at"]),
        detail=json.loads(fields["detail"]),
    )


async def page(store: Store, after: str, count: int = PAGE) -> list[Event]:
    return [parse(i, f) for i, f in await store.events(after, count=count)]


def sse(event: Event) -> str:
    return f"id: {event.id}\nevent: consolidation\ndata: {event.model_dump_json()}\n\n"


@router.get("/events/stream")
async def stream(
    request: Request,
    after: str | None = Query(
        None, description="stream id of the last event already seen; 0 = all; default: from now"
    ),
    last_event_id: str | None = Header(None),
) -> StreamingResponse:
    """Server-sent events: each consolidation event as it is written (a browser resumes by id)."""
    store = tenant(request).store
    start = last_event_id or after or await store.last_event_id()

    async def events() -> AsyncIterator[str]:
        cursor, quiet = start, 0.0
        yield ": memoryd consolidation events\n\n"
        while not await request.is_disconnected():
            try:
                got = await page(store, cursor, PAGE)
            except RedisError:
                got = []  # Redis restarting: the feed resumes from the same id
            for event in got:
                cursor = event.id
                yield sse(event)
            if len(got) == PAGE:
                continue  # catching up: the next page at once
            quiet = 0.0 if got else quiet + POLL_S
            if quiet >= HEARTBEAT_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
