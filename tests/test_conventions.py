"""API and metrics conventions, against a daemon whose engine is a scripted stand-in.

The stand-in speaks vLLM's OpenAI API and misbehaves on request: a stream that
stalls, a stream whose connection drops. No vLLM is needed here.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Daemon

STALL_S = 6.0  # the stand-in's silence; memoryd gives up after server.upstream_timeout_s = 1
CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "base",
    "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}],
}
REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "base",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class Engine(BaseHTTPRequestHandler):
    """The last user message says what to do: "stall", "die", anything else answers.

    Streams are chunked, as vLLM sends them: a connection closed mid-stream is a
    broken response, not its end.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_json({"object": "list", "data": []})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if not body.get("stream"):
            return self.send_json(REPLY)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.chunk(b"data: " + json.dumps(CHUNK).encode() + b"\n\n")
        what = body["messages"][-1]["content"]
        if what == "stall":
            time.sleep(STALL_S)
        elif what == "die":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")

    def chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except BrokenPipeError:  # memoryd gave up on a stalled stream
            self.close_connection = True

    def send_json(self, data: dict[str, Any]) -> None:
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Engine)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def scripted(make_daemon: Callable[..., Daemon], engine: str) -> Daemon:
    return make_daemon(
        "conventions",
        engine__upstreams=json.dumps([engine]),
        server__upstream_timeout_s="1",
        consolidation__idle_after_s="100000",
    )


def stream(daemon: Daemon, what: str) -> list[str]:
    chunks = daemon.openai(max_retries=0).chat.completions.create(
        model="base", messages=[{"role": "user", "content": what}], stream=True
    )
    return [c.choices[0].delta.content or "" for c in chunks]


def test_a_stream_whose_engine_stalls_ends_with_an_error_the_sdk_raises(scripted: Daemon) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIError) as raised:
        stream(scripted, "stall")
    assert time.monotonic() - started < STALL_S
    assert raised.value.code == "upstream_timeout"
    assert raised.value.type == "server_error"
    assert stream(scripted, "fine") == ["Hello"]


def test_a_stream_whose_engine_dies_ends_with_an_error_the_sdk_raises(scripted: Daemon) -> None:
    with pytest.raises(openai.APIError) as raised:
        stream(scripted, "die")
    assert raised.value.code == "upstream_error"
    assert "broke off" in raised.value.message


def test_models_are_retrieved_by_id(scripted: Daemon) -> None:
    client = scripted.openai(max_retries=0)
    assert client.models.retrieve("memoryd").id == "memoryd"
    assert client.models.retrieve("base").id == "base"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("mem-v99")
    assert missing.value.code == "model_not_found"
    assert missing.value.type == "invalid_request_error"


def test_metrics_parse_and_counters_are_counters(scripted: Daemon) -> None:
    client = scripted.openai(max_retries=0)
    secret = "You are a helpful assistant. Mail ops@example.com about the depot, which opens at 7."
    for opener in ("Hi", "Hello"):
        client.chat.completions.create(
            model="base",
            messages=[{"role": "system", "content": secret}, {"role": "user", "content": opener}],
        )

    def families() -> dict[str, Any]:
        text = httpx.get(scripted.url + "/metrics", timeout=30).text
        return {f.name: f for f in text_string_to_metric_families(text)}

    refusals = {"code": "model_not_found", "status": "404"}
    before = value(families(), "memoryd_refusals_total", **refusals)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = families()
        if value(found, "memoryd_observer_observed_total") >= 2:
            break
        time.sleep(0.5)
    for family in found.values():
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
    assert found["memoryd_observer_observed"].type == "counter"
    assert value(found, "memoryd_observer_redacted_total") == 2  # the address, in each request
    assert value(found, "memoryd_refusals_total", **refusals) == before + 1
    assert value(found, "memoryd_requests_total", model="base", status="200") >= 2
    (info,) = found["memoryd_build_info"].samples
    assert info.name == "memoryd_build_info" and info.labels["version"]
    assert value(found, "process_resident_memory_bytes") > 0


def value(families: dict[str, Any], sample: str, **labels: str) -> float:
    return sum(
        s.value
        for f in families.values()
        for s in f.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


def test_the_dashboard_asks_a_browser_for_the_admin_token(
    make_daemon: Callable[..., Daemon], engine: str
) -> None:
    guarded = make_daemon(
        "guarded",
        engine__upstreams=json.dumps([engine]),
        server__admin_token="s3cret-token",
        consolidation__idle_after_s="100000",
    )
    with httpx.Client(base_url=guarded.url, timeout=30) as browser:
        assert browser.get("/ui/memory").headers["location"] == "/ui/login"
        wrong = browser.post("/ui/login", data={"token": "guess"})
        assert "not the admin token" in wrong.text and not browser.cookies
        assert browser.get("/admin/events/stream?after=0").status_code == 401
        signed_in = browser.post("/ui/login", data={"token": "s3cret-token"})
        assert signed_in.status_code == 303 and browser.cookies["memoryd_admin"]
        assert "samesite=strict" in signed_in.headers["set-cookie"].lower()
        page = browser.get("/ui/memory")
        assert page.status_code == 200 and "Nothing observed yet" in page.text
        with browser.stream("GET", "/admin/events/stream") as feed:
            assert feed.headers["content-type"].startswith("text/event-stream")
        # The cookie is for the browser's pages and feed; the admin API still wants the header.
        assert browser.get("/admin/status").status_code == 401
