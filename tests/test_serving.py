"""OpenAI compatibility and refusals, through the official client.

Each feature is asked of memoryd and, with the same request, of the vLLM child
directly: at temperature 0 both must answer the same, streamed and not. The
daemon here has API keys, an admin token and low limits, so that every refusal
(401, 403, 413, 429, 504) can be shown, each followed by a request that works.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI, Stream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.harness import Daemon, status

KEY = "sk-memoryd-test"
ADMIN = "admin-memoryd-test"
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Name three colours of the rainbow."}
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.fixture(scope="module")
def served(make_daemon: Callable[..., Daemon]) -> Iterator[Daemon]:
    daemon = make_daemon(
        "serving",
        extra_env={
            "MEMORYD_SERVER__API_KEYS": json.dumps([KEY]),
            "MEMORYD_SERVER__ADMIN_TOKEN": ADMIN,
        },
        server__max_body_bytes="65536",
        server__max_concurrent_requests="3",
        server__upstream_timeout_s="30",
        consolidation__idle_after_s="100000",
    )
    yield daemon
    daemon.stop()


def memoryd(served: Daemon) -> OpenAI:
    return served.openai(api_key=KEY, max_retries=0)


def direct(served: Daemon) -> OpenAI:
    return OpenAI(
        base_url=f"http://127.0.0.1:{served.env['MEMORYD_ENGINE__PORT']}/v1",
        api_key="unused",
        max_retries=0,
    )


def answer(client: OpenAI, model: str, stream: bool, **params: Any) -> dict[str, Any]:
    """The parts of a chat answer a client relies on, the same shape streamed or not."""
    choices: dict[int, dict[str, Any]] = {}

    def choice(i: int) -> dict[str, Any]:
        return choices.setdefault(
            i, {"text": "", "finish": None, "tool": None, "args": "", "tokens": [], "top": []}
        )

    if not stream:
        reply = client.chat.completions.create(model=model, **params)
        for c in reply.choices:
            out = choice(c.index)
            out["text"], out["finish"] = c.message.content or "", c.finish_reason
            for call in c.message.tool_calls or []:
                assert call.type == "function"
                out["tool"], out["args"] = call.function.name, call.function.arguments
            for lp in (c.logprobs.content or []) if c.logprobs else []:
                out["tokens"].append(lp.token)
                out["top"].append(len(lp.top_logprobs))
        usage = reply.usage.model_dump() if reply.usage else None
        return {"choices": choices, "usage": usage, "model": reply.model}
    usage, model_seen = None, ""
    for chunk in client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True}, **params
    ):
        model_seen = chunk.model
        if chunk.usage:
            assert not chunk.choices  # the usage chunk comes last, on its own
            usage = chunk.usage.model_dump()
        for c in chunk.choices:
            out = choice(c.index)
            out["text"] += c.delta.content or ""
            out["finish"] = c.finish_reason or out["finish"]
            for call in c.delta.tool_calls or []:
                out["tool"] = (call.function.name if call.function else None) or out["tool"]
                out["args"] += (call.function.arguments if call.function else None) or ""
            for lp in (c.logprobs.content or []) if c.logprobs else []:
                out["tokens"].append(lp.token)
                out["top"].append(len(lp.top_logprobs))
    return {"choices": choices, "usage": usage, "model": model_seen}


def same_answer(served: Daemon, stream: bool, **params: Any) -> dict[str, Any]:
    """Asks memoryd and vLLM the same thing; they must agree. Returns memoryd's answer."""
    ours = answer(memoryd(served), "memoryd", stream, temperature=0, **params)
    theirs = answer(direct(served), "base", stream, temperature=0, **params)
    assert ours["choices"] == theirs["choices"]
    assert ours["usage"] == theirs["usage"]
    assert ours["model"] == "base"  # the alias, with no adapter yet, is the base model
    return ours


STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])


@STREAMED
def test_plain_answer_and_usage(served: Daemon, stream: bool) -> None:
    out = same_answer(served, stream, messages=ASK, max_tokens=24)
    assert out["choices"][0]["text"].strip()
    assert out["usage"]["completion_tokens"] <= 24 and out["usage"]["prompt_tokens"] > 0


@STREAMED
def test_max_tokens_and_max_completion_tokens(served: Daemon, stream: bool) -> None:
    for limit in ({"max_tokens": 5}, {"max_completion_tokens": 5}):
        out = same_answer(served, stream, messages=ASK, extra_body={"ignore_eos": True}, **limit)
        assert out["choices"][0]["finish"] == "length"
        assert out["usage"]["completion_tokens"] == 5


@STREAMED
def test_stop_sequence(served: Daemon, stream: bool) -> None:
    messages = [{"role": "user", "content": "Write two sentences about the sea."}]
    out = same_answer(served, stream, messages=messages, max_tokens=64, stop=["."])
    assert "." not in out["choices"][0]["text"]
    assert out["choices"][0]["finish"] == "stop"


@STREAMED
def test_logprobs_and_top_logprobs(served: Daemon, stream: bool) -> None:
    out = same_answer(served, stream, messages=ASK, max_tokens=8, logprobs=True, top_logprobs=3)
    first = out["choices"][0]
    assert len(first["tokens"]) == 8 or first["finish"] == "stop"
    assert first["tokens"] and set(first["top"]) == {3}


@STREAMED
def test_json_schema_response_format(served: Daemon, stream: bool) -> None:
    out = same_answer(
        served,
        stream,
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        max_tokens=64,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON},
        },
    )
    person = json.loads(out["choices"][0]["text"])
    assert isinstance(person["name"], str) and isinstance(person["age"], int)


@STREAMED
def test_tool_call(served: Daemon, stream: bool) -> None:
    out = same_answer(
        served,
        stream,
        messages=[{"role": "user", "content": "What is the weather in Lisbon?"}],
        max_tokens=64,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = out["choices"][0]
    assert call["tool"] == "get_weather"
    assert isinstance(json.loads(call["args"])["city"], str)


@STREAMED
def test_n_choices_and_sampling_parameters(served: Daemon, stream: bool) -> None:
    # Sampled, so memoryd's answer is checked on its own.
    out = answer(
        memoryd(served),
        "memoryd",
        stream,
        messages=ASK,
        max_tokens=8,
        n=2,
        temperature=0.9,
        top_p=0.9,
        seed=7,
    )
    assert sorted(out["choices"]) == [0, 1]
    assert all(c["text"] for c in out["choices"].values())


@STREAMED
def test_completions_endpoint(served: Daemon, stream: bool) -> None:
    def complete(client: OpenAI, model: str) -> tuple[str, list[str]]:
        params: dict[str, Any] = {
            "prompt": "The three primary colours are",
            "max_tokens": 8,
            "temperature": 0,
            "logprobs": 2,
        }
        if not stream:
            reply = client.completions.create(model=model, **params)
            lp = reply.choices[0].logprobs
            return reply.choices[0].text, list(lp.tokens or []) if lp else []
        text, tokens = "", []
        for chunk in client.completions.create(model=model, stream=True, **params):
            for c in chunk.choices:
                text += c.text
                tokens += list(c.logprobs.tokens or []) if c.logprobs else []
        return text, tokens

    ours = complete(memoryd(served), "memoryd")
    assert ours == complete(direct(served), "base")
    assert ours[0] and len(ours[1]) == 8


def test_models_list_created_and_parent(served: Daemon) -> None:
    cards = {m.id: m.model_dump() for m in memoryd(served).models.list().data}
    assert {"memoryd", "base"} <= set(cards)
    assert all(isinstance(c["created"], int) and c["created"] > 0 for c in cards.values())
    assert cards["memoryd"]["root"] == "base" and cards["memoryd"]["parent"] is None
    assert cards["base"]["parent"] is None


# --- refusals ------------------------------------------------------------------


def still_serving(served: Daemon) -> None:
    reply = memoryd(served).chat.completions.create(
        model="memoryd", messages=ASK, max_tokens=4, temperature=0
    )
    assert reply.choices[0].message.content


def error_of(response: Any) -> dict[str, Any]:
    """The OpenAI-format error in a refusal (an httpx or an openai client response)."""
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["message"] and error["type"]
    return error


def test_401_without_or_with_a_wrong_api_key(served: Daemon) -> None:
    chat = {"model": "memoryd", "messages": ASK, "max_tokens": 4}
    missing = httpx.post(served.url + "/v1/chat/completions", json=chat, timeout=30)
    assert missing.status_code == 401
    assert error_of(missing)["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as wrong:
        served.openai(api_key="sk-wrong", max_retries=0).chat.completions.create(**chat)  # type: ignore[call-overload]
    assert wrong.value.status_code == 401
    assert error_of(wrong.value.response)["code"] == "invalid_api_key"
    still_serving(served)


def test_403_with_a_wrong_admin_token(served: Daemon) -> None:
    wrong = served.admin("GET", "/admin/status", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert error_of(wrong)["type"] == "invalid_request_error"
    assert served.admin("GET", "/admin/status").status_code == 401
    # The API key is not an admin token.
    assert (
        served.admin("GET", "/admin/status", headers={"Authorization": f"Bearer {KEY}"})
    ).status_code == 403
    ok = served.admin("GET", "/admin/status", headers={"Authorization": f"Bearer {ADMIN}"})
    assert ok.status_code == 200 and ok.json()["served_model_name"] == "memoryd"


def test_413_body_too_large(served: Daemon) -> None:
    big: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * 70_000}]
    with pytest.raises(openai.APIStatusError) as refused:
        memoryd(served).chat.completions.create(model="memoryd", messages=big, max_tokens=4)
    assert refused.value.status_code == 413
    assert error_of(refused.value.response)["code"] == "body_too_large"
    still_serving(served)


def long_stream(served: Daemon) -> Stream[ChatCompletionChunk]:
    """A stream of over 10 MB (eight choices, twenty top logprobs a token): more than the
    socket buffers between the daemon and a client that stops reading can hold
    (tcp_wmem's 4 MB at most), so the daemon cannot finish sending it."""
    return memoryd(served).chat.completions.create(
        model="memoryd",
        messages=ASK,
        max_tokens=1900,
        n=8,
        logprobs=True,
        top_logprobs=20,
        extra_body={"ignore_eos": True},
        stream=True,
    )


def unsent_bytes(port: int) -> int:
    """What the daemon has written to its clients' sockets and they have not read (Linux)."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            total += int(fields[4].split(":")[0], 16)
    return total


def test_a_client_that_stops_reading_and_goes_away_costs_nothing(served: Daemon) -> None:
    """Closing a connection the daemon is blocked writing to resets it under that write:
    the daemon must take the error (not SIGPIPE) and go on serving."""
    with long_stream(served) as stream:
        next(iter(stream))
        # Full: a megabyte or more unread, and no more going in.
        deadline = time.monotonic() + 300
        before, unsent = -1, 0
        while unsent < 1 << 20 or unsent != before:
            assert time.monotonic() < deadline, f"the daemon's socket never filled: {unsent}"
            time.sleep(2)
            before, unsent = unsent, unsent_bytes(served.port)
    assert served.proc is not None and served.proc.poll() is None
    served_again(served)


@pytest.fixture
def three_long_streams(served: Daemon) -> Iterator[None]:
    """Fills server.max_concurrent_requests (3) with streams held open.

    A holder opens a stream and reads nothing: the daemon cannot finish sending
    it, so it stays in flight until released, however fast or slow the engine
    runs. The slots count as full once the daemon itself says so.
    """
    release = threading.Event()

    def hold() -> None:
        with long_stream(served):
            release.wait()

    holders = [threading.Thread(target=hold) for _ in range(3)]
    for t in holders:
        t.start()
    deadline = time.monotonic() + 300
    while (in_flight := status(served, ADMIN)["consolidation"]["in_flight"]) != 3:
        assert time.monotonic() < deadline, f"{in_flight} of the three streams in flight"
        assert all(t.is_alive() for t in holders), "a holder's stream was refused or failed"
        time.sleep(0.5)
    yield
    release.set()
    for t in holders:
        t.join()


def test_429_over_max_concurrent_requests(served: Daemon, three_long_streams: None) -> None:
    with pytest.raises(openai.RateLimitError) as refused:
        memoryd(served).chat.completions.create(model="memoryd", messages=ASK, max_tokens=4)
    assert refused.value.status_code == 429
    assert refused.value.response.headers["retry-after"] == "1"
    assert error_of(refused.value.response)["code"] == "too_many_requests"


def test_after_429_requests_are_served_again(served: Daemon) -> None:
    served_again(served)


def served_again(served: Daemon) -> None:
    """A request is served once the streams that held the slots have closed."""
    deadline = time.monotonic() + 30
    while True:
        try:
            still_serving(served)
            return
        except openai.RateLimitError:  # the held streams are still closing
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_504_when_the_engine_takes_too_long(served: Daemon) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as refused:
        memoryd(served).chat.completions.create(
            model="memoryd", messages=ASK, max_tokens=1900, extra_body={"ignore_eos": True}
        )
    assert refused.value.status_code == 504
    assert error_of(refused.value.response)["code"] == "upstream_timeout"
    assert time.monotonic() - started < 60
    still_serving(served)
