"""The public API through the official openai client, and bad input, against a real daemon."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.harness import Daemon, metric, redis_bytes


def test_systemd_notifications(daemon: Daemon, notify_socket: socket.socket) -> None:
    """READY=1 once serving, STATUS= with the state, WATCHDOG=1 at half WatchdogSec."""
    time.sleep(4.5)  # WATCHDOG_USEC is 4 s: a ping every 2 s
    messages = []
    while True:
        try:
            messages.append(notify_socket.recv(4096).decode())
        except BlockingIOError:
            break
    assert messages[0].startswith("READY=1")
    assert "STATUS=serving " in messages[0]
    assert sum("WATCHDOG=1" in m for m in messages) >= 2


def test_chat_through_openai_client(daemon: Daemon) -> None:
    client = daemon.openai()
    reply = client.chat.completions.create(
        model="memoryd",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20,
        temperature=0,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_streaming_chat(daemon: Daemon) -> None:
    client = daemon.openai()
    stream = client.chat.completions.create(
        model="memoryd",
        messages=[{"role": "user", "content": "What is the capital of Germany?"}],
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3
    assert "Berlin" in text
    assert chunks[-1].usage is not None


def test_completions_and_base_model(daemon: Daemon) -> None:
    client = daemon.openai()
    reply = client.completions.create(
        model="base", prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert reply.choices[0].text.strip()


def test_models_lists_alias_and_base(daemon: Daemon) -> None:
    ids = {m.id for m in daemon.openai().models.list().data}
    assert {"memoryd", "base"} <= ids


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"model": "memoryd"}).encode(), 400, "messages"),
        (json.dumps({"model": "memoryd", "messages": "hello"}).encode(), 400, "messages"),
        (
            json.dumps(
                {
                    "model": "memoryd",
                    "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": "many",
                }
            ).encode(),
            400,
            "max_tokens",
        ),
        (
            json.dumps({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).encode(),
            404,
            "nope",
        ),
        (json.dumps(["a list"]).encode(), 400, "JSON object"),
    ],
)
def test_bad_input_gets_openai_error(
    daemon: Daemon, body: bytes, status: int, fragment: str
) -> None:
    response = httpx.post(
        daemon.url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"
    # ...and the daemon keeps serving.
    ok = daemon.openai().chat.completions.create(
        model="memoryd", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert ok.choices[0].message.content is not None


def test_openai_client_raises_for_unknown_model(daemon: Daemon) -> None:
    with pytest.raises(openai.NotFoundError):
        daemon.openai().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "Hi"}]
        )


def test_body_too_large(daemon: Daemon) -> None:
    big = "x" * (9 * 1024 * 1024)
    response = httpx.post(
        daemon.url + "/v1/chat/completions",
        json={"model": "memoryd", "messages": [{"role": "user", "content": big}]},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_seed_is_honoured_under_concurrent_mixed_requests(daemon: Daemon) -> None:
    """``seed`` reaches every engine: 16 seeded and unseeded requests at once all answer,
    and one seed gives one answer."""
    client = daemon.openai(max_retries=0)

    def ask(seed: int | None) -> str:
        reply = client.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "Tell me a short story about a fox."}],
            max_tokens=12,
            temperature=1.0,
            seed=seed,
        )
        return reply.choices[0].message.content or ""

    seeds = [7 if i % 2 else None for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, seeds))
    assert all(answers)
    seeded = {a for a, s in zip(answers, seeds, strict=True) if s == 7}
    assert len(seeded) == 1, seeded  # the same seed, the same sampled answer
    assert ask(7) in seeded
    assert len({ask(8), ask(9), ask(10)}) > 1  # different seeds sample differently


def wait_for_fact(daemon: Daemon, text: str, conversations: int, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        facts = daemon.admin("GET", "/admin/facts?limit=1000").json()["facts"]
        match = [f for f in facts if f["text"] == text]
        if match and match[0]["conversations"] >= conversations:
            return match[0]
        time.sleep(0.3)
    raise AssertionError(f"fact {text!r} not seen in {conversations} conversations: {facts}")


def test_observer_counts_distinct_conversations_once(daemon: Daemon) -> None:
    fact = "The Lumen Bakery opens at seven thirty every weekday morning."
    client = daemon.openai()
    history: list[Any] = [
        {"role": "system", "content": f"You answer questions about a bakery. {fact}"},
        {"role": "user", "content": "When do you open?"},
    ]
    client.chat.completions.create(model="memoryd", messages=history, max_tokens=8)
    history += [
        {"role": "assistant", "content": "At seven thirty."},
        {"role": "user", "content": "And on Friday?"},
    ]
    client.chat.completions.create(model="memoryd", messages=history, max_tokens=8)
    seen = wait_for_fact(daemon, fact, 1)
    assert seen["conversations"] == 1  # the re-sent history did not count again
    assert seen["hits"] == 2
    passage = daemon.admin("GET", f"/admin/passages/{seen['passage']}").json()
    assert passage["text"] == f"You answer questions about a bakery. {fact}"
    assert [f["text"] for f in passage["facts"]] == [fact]  # the instruction is not a fact
    assert passage["questions"] == ["And on Friday?", "When do you open?"]

    for question in ("Are you open early?", "Do you sell bread?"):
        client.chat.completions.create(
            model="memoryd",
            messages=[
                {"role": "system", "content": f"You answer questions about a bakery. {fact}"},
                {"role": "user", "content": question},
            ],
            max_tokens=8,
        )
    assert wait_for_fact(daemon, fact, 3)["conversations"] == 3


def test_forget_by_matching_text(daemon: Daemon) -> None:
    fact = "The Quarry Lane library lends telescopes on Tuesdays."
    daemon.openai().chat.completions.create(
        model="memoryd",
        messages=[{"role": "system", "content": fact}, {"role": "user", "content": "Hi"}],
        max_tokens=4,
    )
    wait_for_fact(daemon, fact, 1)
    assert daemon.cli("forget").returncode == 2  # neither an id nor --match
    done = daemon.cli("forget", "--match", "QUARRY lane", "--json")
    assert done.returncode == 0, done.stderr
    forgotten = json.loads(done.stdout)["forgotten"]
    assert [f["text"] for f in forgotten] == [fact]
    assert forgotten[0]["status"] == "forgotten"
    assert forgotten[0]["reason"] == "forgotten by the operator"  # the match is not recorded
    # Its words left Redis: the fact keeps its id and status, its passage lost the sentence.
    stored = redis_bytes(redis.Redis(unix_socket_path=str(daemon.state_dir / "redis/redis.sock")))
    assert b"telescopes" not in stored and forgotten[0]["id"].encode() in stored
    record = daemon.admin("GET", f"/admin/facts/{forgotten[0]['id']}").json()
    assert record["status"] == "forgotten" and record["text"] == ""
    # Said again, it is not stored again.
    observed = daemon_status(daemon)["observer"]["observed"]
    daemon.openai().chat.completions.create(
        model="memoryd",
        messages=[{"role": "system", "content": fact}, {"role": "user", "content": "Hi?"}],
        max_tokens=4,
    )
    deadline = time.monotonic() + 20
    while daemon_status(daemon)["observer"]["observed"] == observed:
        assert time.monotonic() < deadline, "the request was not observed"
        time.sleep(0.3)
    stored = redis_bytes(redis.Redis(unix_socket_path=str(daemon.state_dir / "redis/redis.sock")))
    assert b"telescopes" not in stored
    again = daemon.cli("forget", "--match", "quarry lane")
    assert again.returncode == 1 and "no fact to forget" in again.stderr
    short = daemon.admin("POST", "/admin/facts/forget", json={"match": "ab"})
    assert short.status_code == 400 and short.json()["error"]["param"] == "match"


def test_forget_a_passage_from_the_cli(daemon: Daemon) -> None:
    text = "The Ormsby ferry leaves Quenby pier at half past nine. It carries bicycles free."
    daemon.openai().chat.completions.create(
        model="memoryd",
        messages=[{"role": "system", "content": text}, {"role": "user", "content": "When?"}],
        max_tokens=4,
    )
    seen = wait_for_fact(daemon, "The Ormsby ferry leaves Quenby pier at half past nine.", 1)
    done = daemon.cli("passages", "forget", seen["passage"], "--json")
    assert done.returncode == 0, done.stderr
    forgotten = json.loads(done.stdout)
    assert forgotten["status"] == "forgotten" and forgotten["text"] == ""
    assert {f["status"] for f in forgotten["facts"]} == {"forgotten"}
    assert forgotten["retirement"] == {"retired": [], "serving": None, "until_replaced": None}
    stored = redis_bytes(redis.Redis(unix_socket_path=str(daemon.state_dir / "redis/redis.sock")))
    assert b"Ormsby" not in stored and b"bicycles" not in stored
    assert daemon.admin("GET", f"/admin/passages/{seen['passage']}").json()["questions"] == []
    shown = daemon.cli("passages", "forget", seen["passage"])
    assert shown.returncode == 0 and "serving the base model" in shown.stdout, shown.stderr


def test_secrets_never_reach_redis(daemon: Daemon) -> None:
    client = daemon.openai()
    client.chat.completions.create(
        model="memoryd",
        messages=[
            {
                "role": "system",
                "content": "The deploy key for the Quokka project is sk-abcdefghijklmnop1234567890.",
            },
            {"role": "user", "content": "Hello?"},
        ],
        max_tokens=4,
    )
    deadline = time.monotonic() + 20
    while (
        daemon_status(daemon)["observer"]["statements_dropped"] < 1 and time.monotonic() < deadline
    ):
        time.sleep(0.3)
    # Its one statement's point was the key: not learned, so the passage states nothing to keep.
    assert daemon_status(daemon)["redacted"]["api_key"] >= 1
    stored = daemon.admin("GET", "/admin/passages?limit=1000").json()["passages"]
    stored += daemon.admin("GET", "/admin/facts?limit=1000").json()["facts"]
    assert not [r for r in stored if "Quokka" in r["text"]]


def daemon_status(daemon: Daemon) -> dict[str, Any]:
    return dict(daemon.admin("GET", "/admin/status").json())


def test_status_and_cli(daemon: Daemon) -> None:
    status = daemon.admin("GET", "/admin/status").json()
    assert status["active_adapter"] is None
    assert status["engine"]["upstream"] and status["engine"]["ready"]
    assert status["consolidation"]["state"] == "idle"
    cli = daemon.cli("status", "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["served_model_name"] == "memoryd"
    facts = daemon.cli("facts", "--json")
    assert facts.returncode == 0 and json.loads(facts.stdout)["total"] >= 1
    assert daemon.cli("consolidations").returncode == 0
    missing = daemon.cli("facts", "show", "0000000000000000")
    assert missing.returncode == 1 and "no fact" in missing.stderr


def test_admin_404_is_openai_format(daemon: Daemon) -> None:
    response = daemon.admin("GET", "/admin/consolidations/999")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "run_not_found"


def test_metrics(daemon: Daemon) -> None:
    daemon.openai().chat.completions.create(
        model="memoryd", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    text = daemon.admin("GET", "/metrics").text
    assert 'memoryd_requests_total{model="memoryd",status="200"}' in text
    assert "memoryd_observer_queue_depth" in text
    assert 'memoryd_consolidation_state{phase="idle"} 1.0' in text
    assert "memoryd_active_adapter_version 0.0" in text
    assert 'memoryd_facts{status="pending"}' in text


def test_pause_resume_and_empty_adapters(daemon: Daemon) -> None:
    assert daemon.cli("pause").returncode == 0
    assert daemon.admin("GET", "/admin/status").json()["consolidation"]["enabled"] is False
    assert daemon.cli("resume").returncode == 0
    assert daemon.admin("GET", "/admin/status").json()["consolidation"]["enabled"] is True
    listed = daemon.admin("GET", "/admin/adapters").json()
    assert listed == {"active": None, "adapters": [], "last_promotion": None}
    missing = daemon.cli("adapters", "rollback", "7")
    assert missing.returncode == 1 and "no manifest.json" in missing.stderr


LONG_STORY = {
    "model": "memoryd",
    "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
    "max_tokens": 1500,
    "ignore_eos": True,
}


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_client_disconnect_cancels_upstream(daemon: Daemon, stream: bool) -> None:
    """Hanging up stops the generation: vLLM produces far fewer tokens than were asked for."""
    engine = daemon.admin("GET", "/admin/status").json()["engine"]["upstream"][0]

    def disconnected() -> float:
        return metric(daemon.url, "memoryd_requests_total", model="memoryd", status="disconnected")

    before, generated = disconnected(), metric(engine, "vllm:generation_tokens_total")
    body = {**LONG_STORY, "stream": stream}
    if stream:
        with httpx.stream(
            "POST", daemon.url + "/v1/chat/completions", json=body, timeout=60
        ) as response:
            assert next(response.iter_raw()).startswith(b"data:")
    else:
        with pytest.raises(httpx.ReadTimeout):  # gives up after 1 s and closes the connection
            httpx.post(daemon.url + "/v1/chat/completions", json=body, timeout=1)
    deadline = time.monotonic() + 15
    while daemon.admin("GET", "/admin/status").json()["consolidation"]["in_flight"] != 0:
        assert time.monotonic() < deadline, "the disconnected request is still counted in flight"
        time.sleep(0.2)
    assert disconnected() == before + 1
    deadline = time.monotonic() + 15
    while metric(engine, "vllm:num_requests_running") != 0:
        assert time.monotonic() < deadline, "vLLM is still generating"
        time.sleep(0.3)
    tokens = metric(engine, "vllm:generation_tokens_total") - generated
    assert tokens < 1500 / 2, f"{tokens} tokens generated after the hang-up"


def unread_bytes_from_engine(engine_port: int) -> int:
    """Bytes the kernel holds for memoryd on its connections to the engine, unread."""
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == engine_port:
            unread = max(unread, int(fields[4].split(":")[1], 16))  # rx_queue
    return unread


def test_a_slow_reader_gets_backpressure_and_every_byte(daemon: Daemon) -> None:
    """A client that stops reading stops memoryd reading from vLLM; nothing is lost.

    The stream (8 choices with top-20 logprobs, ~8 MB) is more than the kernel
    buffers between memoryd and a client that reads nothing (memoryd's send
    buffer tops out at tcp_wmem's 4 MB): once they are full, what vLLM sends
    waits unread on memoryd's upstream socket instead of piling up in memoryd's
    memory. Then the client reads the whole stream, every token through [DONE].
    """
    engine = daemon.admin("GET", "/admin/status").json()["engine"]["upstream"][0]
    engine_port = int(engine.rsplit(":", 1)[1])
    body = {**LONG_STORY, "max_tokens": 600, "n": 8, "stream": True}
    body |= {"logprobs": True, "top_logprobs": 20}
    small_buffer = httpx.HTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)]
    )
    with (
        httpx.Client(transport=small_buffer, timeout=120) as client,
        client.stream("POST", daemon.url + "/v1/chat/completions", json=body) as response,
    ):
        deadline = time.monotonic() + 120
        while unread_bytes_from_engine(engine_port) < 64 * 1024:
            assert time.monotonic() < deadline, "memoryd kept reading vLLM for a stalled client"
            time.sleep(0.2)
        stream = b"".join(response.iter_bytes())
    # split the bytes: str.splitlines would also split at U+2028 inside a token
    events = [line for line in stream.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    tokens = sum(
        len(choice["logprobs"]["content"])
        for event in events[:-1]
        for choice in json.loads(event.removeprefix(b"data: "))["choices"]
        if choice.get("logprobs")
    )
    assert tokens == 8 * 600


def test_logs_are_json_lines(daemon: Daemon) -> None:
    """log_format json: every line the daemon writes is one object (journald, pipelines)."""
    lines = daemon.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert any(r["logger"] == "memoryd.supervisor" for r in records)  # the children it runs


def test_sighup_reloads_the_config(daemon: Daemon) -> None:
    """Live keys change at once; an invalid file is refused and the running config stays."""
    assert daemon.proc is not None
    path = Path(daemon.env["MEMORYD_CONFIG"])
    original = path.read_text()
    chat = {"model": "memoryd", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}

    def status_without_key() -> int:
        return httpx.post(daemon.url + "/v1/chat/completions", json=chat, timeout=60).status_code

    def reload(text: str, until: Callable[[], bool]) -> None:
        path.write_text(text)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not until():
            assert time.monotonic() < deadline, daemon.tail()
            time.sleep(0.2)

    def logged(message: str) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in daemon.log_path.read_text().splitlines()]
        return [r for r in records if r["message"].startswith(message)]

    keyed = original.replace("  api_keys: []", '  api_keys: ["sk-reloaded"]')
    assert keyed != original
    try:
        reload(keyed, lambda: status_without_key() == 401)
        with_key = httpx.post(
            daemon.url + "/v1/chat/completions",
            json=chat,
            headers={"Authorization": "Bearer sk-reloaded"},
            timeout=60,
        )
        assert with_key.status_code == 200
        assert "server.api_keys" in logged("config reloaded")[-1]["reload"]["applied"]

        broken = keyed.replace("  max_body_bytes: 8388608", "  max_body_bytes: lots")
        assert broken != keyed
        reload(broken, lambda: bool(logged("config reload refused")))
        assert "server.max_body_bytes" in logged("config reload refused")[-1]["message"]
        assert status_without_key() == 401  # the running config stayed
    finally:
        reload(original, lambda: status_without_key() == 200)
