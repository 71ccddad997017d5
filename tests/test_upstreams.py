"""The engines behind memoryd: one that dies is not an outage.

External vLLM upstreams are health-checked: one that restarts serves the memory
model again within its health interval, without restarting memoryd. Managed
replicas share the requests; one killed under load costs no request and comes
back with the serving adapter loaded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file

from daemon.config import EngineConfig
from daemon.engine.adapters import MANIFEST, adapter_dir, adapter_name, file_hashes
from daemon.engine.process import vllm_command
from daemon.memory.records import AdapterManifest, now
from tests.harness import Daemon, daemon_env, free_port, metric, status, wait_until

HEALTH_INTERVAL_S = 2.0
ASK = {"model": "memoryd", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def write_lora(adapters: Path, version: int, model_dir: Path) -> None:
    """A rank-8 LoRA on q_proj and v_proj of the model's shape (weights: small noise)."""
    config = json.loads((model_dir / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    kv = config["num_key_value_heads"] * (hidden // config["num_attention_heads"])
    tensors = {}
    for layer in range(layers):
        for module, out in (("q_proj", hidden), ("v_proj", kv)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(8, hidden) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn(out, 8) * 0.01
    directory = adapter_dir(adapters, version)
    directory.mkdir(parents=True)
    save_file(tensors, directory / "adapter_model.safetensors")
    (directory / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16,
        "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": str(model_dir),
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
    }))  # fmt: skip
    manifest = AdapterManifest(
        version=version, name=adapter_name(version), base_model=str(model_dir),
        created_at=now(), fact_ids=[], facts=[], examples={}, training={}, metrics={},
        files=file_hashes(directory),
    )  # fmt: skip
    (directory / MANIFEST).write_text(manifest.model_dump_json())


class Upstream:
    """An external vLLM server (memoryd's own command line, on a port of its own)."""

    def __init__(self, model_dir: Path, log: Path) -> None:
        self.port = free_port()
        cfg = EngineConfig(port=self.port, max_model_len=512)
        self.argv = vllm_command(cfg, model_dir)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
               "VLLM_CPU_KVCACHE_SPACE": "1"}  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError("vLLM did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def upstream(model_dir: Path, tmp_path: Path) -> Iterator[Upstream]:
    engine = Upstream(model_dir, tmp_path / "vllm.log")
    engine.start()
    yield engine
    engine.stop()


def serving_a_lora(model_dir: Path, tmp_path: Path, **overrides: str) -> Daemon:
    """A started daemon with adapter v1 on disk, routing every request to it once active."""
    state = tmp_path / "state"
    write_lora(state / "adapters", 1, model_dir)
    env, port = daemon_env(
        state,
        model_dir,
        routing="always",
        # No idle tick: this adapter carries no facts, and a daemon idle for a minute would
        # find its memory empty and serve the base model.
        consolidation__idle_after_s="100000",
        **overrides,
    )
    daemon = Daemon(state, port, env)
    daemon.start()
    return daemon


def test_restarted_upstream_serves_the_memory_model_again(
    upstream: Upstream, model_dir: Path, tmp_path: Path
) -> None:
    daemon = serving_a_lora(
        model_dir,
        tmp_path,
        engine__upstreams=json.dumps([f"http://127.0.0.1:{upstream.port}"]),
        engine__health_interval_s=str(HEALTH_INTERVAL_S),
    )
    try:
        daemon.admin("POST", "/admin/adapters/1/activate").raise_for_status()
        chat = daemon.admin("POST", "/v1/chat/completions", json=ASK)
        assert chat.status_code == 200 and chat.json()["model"] == "mem-v1", chat.text

        upstream.stop()  # it forgets every adapter loaded into it at runtime
        deadline = time.monotonic() + 3 * HEALTH_INTERVAL_S + 10
        while daemon.admin("GET", "/readyz").status_code != 503:
            assert time.monotonic() < deadline, "a dead upstream still counted as ready"
            time.sleep(0.5)
        assert daemon.admin("POST", "/v1/chat/completions", json=ASK).status_code == 503

        upstream.start()
        back = time.monotonic()
        while True:
            chat = daemon.admin("POST", "/v1/chat/completions", json=ASK)
            if chat.status_code == 200:
                break
            assert chat.status_code == 503, chat.text  # never 404: mem-v1 is reloaded first
            # A probe or two after it answers again, with room for a busy machine.
            assert time.monotonic() - back < 3 * HEALTH_INTERVAL_S + 15, chat.text
            time.sleep(0.2)
        assert chat.json()["model"] == "mem-v1"
        assert "lacks mem-v1: loading it again" in daemon.tail(200)
    finally:
        daemon.stop()


def models_on(url: str) -> set[str]:
    return {m["id"] for m in httpx.get(url + "/v1/models", timeout=30).json()["data"]}


def test_a_killed_replica_costs_no_request_and_comes_back_with_the_adapter(
    model_dir: Path, tmp_path: Path
) -> None:
    daemon = serving_a_lora(model_dir, tmp_path, engine__replicas="2")
    answered: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        client = daemon.openai(max_retries=0)
        while not stop.is_set():
            try:
                reply = client.chat.completions.create(
                    model="memoryd",
                    messages=[{"role": "user", "content": "Name a colour."}],
                    max_tokens=8,
                )
                answered.append(reply.model)
            except Exception as exc:
                failures.append(repr(exc))

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    try:
        daemon.admin("POST", "/admin/adapters/1/activate").raise_for_status()
        replicas = status(daemon)["engine"]["replicas"]
        assert len(replicas) == 2 and all(r["healthy"] for r in replicas), replicas
        assert all("mem-v1" in models_on(r["url"]) for r in replicas)
        for w in workers:
            w.start()
        wait_until("both replicas to serve", lambda: len(answered) >= 16, 120, daemon)
        shares = [metric(r["url"], "vllm:request_success_total") for r in replicas]
        assert all(n > 0 for n in shares), shares  # least outstanding spreads them

        victim = replicas[1]
        os.killpg(victim["pid"], signal.SIGKILL)
        killed_at = len(answered)
        wait_until("requests after the kill", lambda: len(answered) >= killed_at + 16, 120, daemon)
        # On two CPU cores a busy vLLM keeps its core: the restart is awaited without load.
        stop.set()
        for w in workers:
            w.join(120)
        assert not failures, failures[:3]
        back = wait_until(
            "the killed replica to be back",
            lambda: (
                (r := status(daemon)["engine"]["replicas"][1])["restarts"] and r["healthy"] and r
            ),
            600,
            daemon,
        )
        assert back["restarts"] == 1 and back["pid"] != victim["pid"], back
        assert "mem-v1" in models_on(victim["url"])  # reloaded before it took requests
        client = daemon.openai(max_retries=0)
        for _ in range(4):  # least outstanding: one at a time, they take turns
            reply = client.chat.completions.create(
                model="memoryd", messages=[{"role": "user", "content": "Hi"}], max_tokens=2
            )
            answered.append(reply.model)
        assert metric(victim["url"], "vllm:request_success_total") > 0
    finally:
        stop.set()
        for w in workers:
            if w.is_alive():
                w.join(60)
        daemon.stop()
    assert set(answered) == {"mem-v1"}
