"""The public OpenAI-compatible API: validate, route to an adapter, stream vLLM's answer back.

The body is forwarded as sent except for ``model`` (the engine-side name);
vLLM's response bytes are streamed back unchanged as they arrive. A client
that disconnects closes the upstream stream, which cancels the generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from daemon.api.errors import APIError, validation_error
from daemon.api.protocol import (
    ChatCompletionRequest,
    CompletionBase,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from daemon.api.tenancy import tenant
from daemon.engine.client import BASE_MODEL_NAME
from daemon.engine.pool import NoEngine, Replica
from daemon.engine.swap import UnknownModel
from daemon.memory.observer import message_text
from daemon.services import Services
from daemon.tenants import Tenant, scoped

log = logging.getLogger("memoryd.api")
router = APIRouter(prefix="/v1")
OFF = frozenset({"off", "false", "0", "no"})
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding"}
JSON_HEADERS = {"Content-Type": "application/json"}


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body larger than {limit} bytes", code="body_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, f"request body larger than {limit} bytes", code="body_too_large")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    return data


def parse(model: type[CompletionBase], data: dict[str, Any]) -> CompletionBase:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from exc


async def forward(
    request: Request, path: str, model: type[ChatCompletionRequest | CompletionRequest]
) -> Response:
    svc = services(request)
    data = await read_json(request, svc.settings.server.max_body_bytes)
    parsed = parse(model, data)
    own = await scoped(svc.shared, svc.tenants, tenant(request), parsed.user)
    public_name = data["model"]
    try:
        engine_name = await own.swapper.resolve(public_name, lambda: texts_of(parsed))
    except UnknownModel:
        raise APIError(
            404, f"The model `{public_name}` does not exist.", param="model", code="model_not_found"
        ) from None
    if not svc.engines_ready():
        raise APIError(503, "the engine is restarting", headers={"Retry-After": "5"})
    replica = svc.pool.pick()
    limit = svc.settings.server.max_concurrent_requests
    if svc.activity.in_flight >= limit:
        raise APIError(
            429,
            f"{limit} requests are already in flight (server.max_concurrent_requests)",
            code="too_many_requests",
            headers={"Retry-After": "1"},
        )
    data["model"] = engine_name
    data.pop("memoryd", None)  # memoryd's extension, not vLLM's
    served = Served(
        svc,
        own,
        replica,
        public_name,
        engine_name,
        data,
        request.headers.get("x-conversation-id"),
        wants_learning(request, parsed) and svc.settings.learns(own.name),
    )
    timeout = svc.settings.server.upstream_timeout_s
    upstream = served.send(
        path,
        json.dumps(data).encode(),
        aiohttp.ClientTimeout(sock_connect=timeout, sock_read=timeout),
    )
    try:
        if not parsed.stream:
            return await whole(request, upstream, served)
        reply = await upstream
    except asyncio.TimeoutError as exc:
        await served.end("timeout")
        raise APIError(504, "the engine did not answer in time", code="upstream_timeout") from exc
    except aiohttp.ClientError as exc:
        await served.end("unavailable")
        raise APIError(
            503, f"the engine is unavailable: {exc}", headers={"Retry-After": "5"}
        ) from exc

    async def relay() -> AsyncIterator[bytes]:
        """Bytes as vLLM sends them; the bookkeeping runs however the stream ends.

        A client that goes away cancels this generator: closing the upstream
        connection then aborts the generation in vLLM. The cleanup is shielded so
        that the cancellation cannot skip it (an in-flight count that never
        drops would keep the daemon from ever being idle).
        """
        completed = False
        try:
            async for chunk in reply.content.iter_any():
                yield chunk
            completed = True
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            yield stream_error(exc, timeout)
        finally:
            with anyio.CancelScope(shield=True):
                if completed:
                    reply.release()
                else:
                    reply.close()
                await served.end(reply.status if completed else "disconnected")

    return StreamingResponse(relay(), status_code=reply.status, headers=relayed(reply))


def stream_error(exc: Exception, timeout: float) -> bytes:
    """The event that ends a stream whose engine stalled or died: the openai SDK raises it.

    The blank lines first close any event the engine left half-sent.
    """
    if isinstance(exc, asyncio.TimeoutError):
        error = APIError(504, f"the engine sent nothing for {timeout:g} s", code="upstream_timeout")
    else:
        error = APIError(502, f"the engine's stream broke off: {exc}", code="upstream_error")
    return b"\n\ndata: " + error.body.model_dump_json().encode() + b"\n\n"


async def whole(
    request: Request, upstream: Awaitable[aiohttp.ClientResponse], served: Served
) -> Response:
    """A non-streamed answer, sent in one piece with its length.

    vLLM answers only when the generation is done; a client that goes away
    meanwhile is noticed by listening for its disconnect, and cancelling the
    upstream exchange closes its connection, which aborts the generation.
    """

    async def exchange() -> tuple[aiohttp.ClientResponse, bytes]:
        reply = await upstream
        async with reply:
            return reply, await reply.read()

    answering = asyncio.ensure_future(exchange())
    gone = asyncio.ensure_future(request.receive())  # http.disconnect once the client leaves
    try:
        done, _ = await asyncio.wait((answering, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        answering.cancel()  # nothing to cancel once it is done
    if answering not in done:
        await served.end("disconnected")
        return Response(status_code=499)
    reply, body = answering.result()  # raises the exchange's own error, if any
    await served.end(reply.status)
    return Response(body, status_code=reply.status, headers=relayed(reply))


def relayed(reply: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in reply.headers.items() if k.lower() not in HOP_HEADERS}


class Served:
    """One request's bookkeeping: in flight until ``end``, then counted and observed."""

    def __init__(
        self,
        svc: Services,
        own: Tenant,
        replica: Replica,
        public_name: str,
        engine_name: str,
        data: dict[str, Any],
        explicit: str | None,
        learn: bool,
    ) -> None:
        self.svc, self.own, self.public_name, self.engine_name = svc, own, public_name, engine_name
        self.replica, self.data, self.explicit, self.learn = replica, data, explicit, learn
        self.started = time.monotonic()
        svc.activity.begin()
        own.swapper.acquire(engine_name)
        replica.outstanding += 1

    async def send(
        self, path: str, body: bytes, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """POST to the chosen replica, or to the next healthy one if it never answered.

        A replica that refuses the connection or drops it before any response
        (it died: managed ones are taken out a moment later) has not served the
        request, so another may; one that is only slow is not asked twice.
        """
        tried: list[Replica] = []
        while True:
            url = self.replica.client.url
            try:
                return await self.svc.http.post(
                    url + path, data=body, headers=JSON_HEADERS, timeout=timeout
                )
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
                tried.append(self.replica)
                try:
                    replica = self.svc.pool.pick(exclude=tried)
                except NoEngine:
                    raise exc from None
                log.warning("engine %s failed a request (%s): sent to %s", url, exc,
                            replica.client.url)  # fmt: skip
                self.replica.outstanding -= 1
                self.replica = replica
                replica.outstanding += 1

    async def end(self, status: int | str) -> None:
        svc = self.svc
        svc.activity.end()
        self.replica.outstanding -= 1
        await self.own.swapper.release(self.engine_name)
        svc.metrics.requests.labels(self.public_name, str(status)).inc()
        svc.metrics.latency.labels(self.public_name).observe(time.monotonic() - self.started)
        if self.learn and status == 200 and "messages" in self.data:
            svc.observer.submit(self.data["messages"], self.explicit, self.own.store)


def wants_learning(request: Request, parsed: CompletionBase) -> bool:
    """A client opts a request out with ``X-Memoryd-Learn: off`` or ``"memoryd": {"learn": false}``."""
    header = request.headers.get("x-memoryd-learn", "").strip().lower()
    if header in OFF:
        return False
    return parsed.memoryd is None or parsed.memoryd.learn


def texts_of(parsed: CompletionBase) -> list[str]:
    """What a request says, for deciding whether the memory adapter applies."""
    if isinstance(parsed, ChatCompletionRequest):
        return [message_text(m.content) for m in parsed.messages]
    prompt = parsed.prompt if isinstance(parsed, CompletionRequest) else ""
    return [prompt] if isinstance(prompt, str) else [p for p in prompt if isinstance(p, str)]


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await forward(request, "/v1/chat/completions", ChatCompletionRequest)


@router.post("/completions")
async def completions(request: Request) -> Response:
    return await forward(request, "/v1/completions", CompletionRequest)


@router.get("/models", response_model=ModelList)
async def models(request: Request) -> JSONResponse:
    return JSONResponse(ModelList(data=cards(request)).model_dump())


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def model(request: Request, model_id: str) -> JSONResponse:
    """One model, as ``client.models.retrieve`` asks for it."""
    for card in cards(request):
        if card.id == model_id:
            return JSONResponse(card.model_dump())
    raise APIError(
        404, f"The model `{model_id}` does not exist.", param="model", code="model_not_found"
    )


def cards(request: Request) -> list[ModelCard]:
    """The names a request may use: the alias, the base model, its tenant's loaded adapters."""
    svc, own = services(request), tenant(request)
    started = int(svc.started_at)
    active = own.swapper.active
    found = [
        ModelCard(
            id=svc.settings.served_model_name,
            created=int(active.created) if active else started,
            root=active.name if active else BASE_MODEL_NAME,
            parent=BASE_MODEL_NAME if active else None,
        ),
        ModelCard(id=BASE_MODEL_NAME, created=started, root=str(svc.model_dir)),
    ]
    found += [
        ModelCard(id=a.name, created=int(a.created), root=str(a.path), parent=BASE_MODEL_NAME)
        for a in sorted(own.swapper.loaded.values(), key=lambda a: a.version)
    ]
    return found
