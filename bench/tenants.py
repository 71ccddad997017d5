"""Chat latency with more tenants than LoRA slots: 6 tenants over 2 slots against 1, same load.

Starts a real memoryd (managed vLLM child) with ``engine.max_loras`` 2 and six
tenants, each serving its own adapter ``mem-tN-v1`` through the ``memoryd``
alias (routing ``always``). The adapters are LoRAs of the configured rank and
target modules with random weights, made with PEFT: this measures serving, not
memory, and a random LoRA costs the engine what a trained one does. In one run,
alternating rounds of the same streaming load (fixed prompt, fixed output
length, greedy):

- 1 tenant: every request with t1's key, so one adapter serves everything;
- 6 tenants: request i with tenant (i mod 6)'s key, so six adapters compete
  for two slots in a batch (vLLM holds ``max_cpu_loras`` in memory).

Prints, per case, p50/p99 latency, time to first token p50, throughput and
failed requests.

    .venv/bin/python bench/tenants.py [--clients 12] [--requests 48] [--tokens 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.serve import streaming_body
from daemon.config import TrainingConfig
from daemon.engine.adapters import MANIFEST, file_hashes
from daemon.memory.records import AdapterManifest, now
from tests.harness import ROOT, Daemon, daemon_env

TENANTS = [f"t{i}" for i in range(1, 7)]
OPERATOR = "bench-operator"


def random_adapter(model_dir: Path, training: TrainingConfig, out: Path) -> None:
    """A LoRA of the configured shape with random weights, and the manifest memoryd requires."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    lora = LoraConfig(
        r=training.rank,
        lora_alpha=training.alpha,
        target_modules=training.target_modules,
        task_type="CAUSAL_LM",
        init_lora_weights=False,  # random A and B: the adapter changes what the model says
    )
    get_peft_model(base, lora).save_pretrained(str(out))
    manifest = AdapterManifest(
        version=1,
        name="bench",
        base_model=str(model_dir),
        created_at=now(),
        fact_ids=[],
        facts=[],
        examples={},
        training=training.model_dump(),
        metrics={},
        files=file_hashes(out),
    )
    (out / MANIFEST).write_text(manifest.model_dump_json(indent=2))


async def one(client: httpx.AsyncClient, url: str, key: str, tokens: int) -> tuple[float, float]:
    start = time.perf_counter()
    first = 0.0
    body = streaming_body("memoryd", tokens)
    headers = {"Authorization": f"Bearer {key}"}
    async with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not first and line.startswith("data: ") and '"content"' in line:
                first = time.perf_counter() - start
    return first, time.perf_counter() - start


async def load(
    url: str, keys: list[str], clients: int, requests: int, tokens: int
) -> dict[str, float]:
    gate = asyncio.Semaphore(clients)
    failed = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def bounded(i: int) -> tuple[float, float] | None:
            nonlocal failed
            async with gate:
                try:
                    return await one(client, url, keys[i % len(keys)], tokens)
                except httpx.HTTPError:
                    failed += 1
                    return None

        started = time.perf_counter()
        done = await asyncio.gather(*(bounded(i) for i in range(requests)))
        wall = time.perf_counter() - started
    results = [r for r in done if r is not None]
    latency = sorted(r[1] for r in results)
    return {
        "p50_ms": statistics.median(latency) * 1000,
        "p99_ms": latency[min(len(latency) - 1, int(len(latency) * 0.99))] * 1000,
        "ttft_p50_ms": statistics.median(r[0] for r in results) * 1000,
        "tokens_per_s": len(results) * tokens / wall,
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--requests", type=int, default=48, help="per round")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating 1-tenant/6-tenant rounds"
    )
    parser.add_argument(
        "--model", type=Path, default=ROOT / "var" / "models" / "SmolLM2-135M-Instruct"
    )
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="memoryd-bench-tenants-"))
    config = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    config["server"]["admin_token"] = OPERATOR
    config["tenants"] = {t: {"api_keys": [f"{t}-key"]} for t in TENANTS}
    config_file = state / "memoryd.yaml"
    config_file.write_text(yaml.safe_dump(config))
    adapter = state / "random-lora"
    random_adapter(args.model, TrainingConfig(**config["consolidation"]["training"]), adapter)

    env, port = daemon_env(
        state,
        args.model,
        routing="always",
        engine__max_loras="2",
        consolidation__idle_after_s="1000000",
    )
    env["MEMORYD_CONFIG"] = str(config_file)
    daemon = Daemon(state, port, env)
    daemon.start()
    try:
        operator = {"Authorization": f"Bearer {OPERATOR}"}
        for t in TENANTS:
            shutil.copytree(adapter, state / "tenants" / t / "adapters" / "v1")
            activated = daemon.admin(
                "POST", "/admin/adapters/1/activate", headers=operator, params={"tenant": t}
            )
            activated.raise_for_status()
        print(f"{args.clients} clients, {args.requests} requests per round, {args.tokens} tokens")
        cases = {"1 tenant": [f"{TENANTS[0]}-key"], "6 tenants": [f"{t}-key" for t in TENANTS]}
        url = daemon.url + "/v1/chat/completions"
        asyncio.run(load(url, cases["6 tenants"], args.clients, len(TENANTS), args.tokens))  # warm
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, keys in cases.items():
                runs[name].append(
                    asyncio.run(load(url, keys, args.clients, args.requests, args.tokens))
                )
        print(f"{'case':>10} {'p50 ms':>8} {'p99 ms':>8} {'ttft50':>8} {'tok/s':>7} {'failed':>6}")
        for name, results in runs.items():
            med = {k: statistics.median(r[k] for r in results) for k in results[0]}
            failed = sum(int(r["failed"]) for r in results)
            print(
                f"{name:>10} {med['p50_ms']:8.0f} {med['p99_ms']:8.0f} "
                f"{med['ttft_p50_ms']:8.0f} {med['tokens_per_s']:7.1f} {failed:6d}"
            )
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
