"""Serving overhead: the same streaming load directly against vLLM and through memoryd.

Starts a real memoryd (managed vLLM child) and, in one run, alternates rounds
against vLLM's own port and memoryd's, at each concurrency: fixed prompt,
fixed output length (ignore_eos), temperature 0, streaming. Prints throughput,
p50/p99 latency and time to first token for both, and their ratios.

First the proxy's fixed cost per request: one-token answers, one at a time,
direct, through memoryd, and through a bare TCP pass-through (bench/passthrough.py,
which copies bytes and parses nothing: the floor of any extra hop).

Then swaps under load: two small real consolidations leave mem-v1 and mem-v2
on disk, and while 32 clients stream through the ``memoryd`` alias the
operator activates the other version ``--promotions`` times. Prints failed
requests and, per promotion, the time from "activate" to the first response
served by the new version (the ``model`` field of its first chunk), that
request's own time to first chunk, and the promotion's steps as the daemon
timed them (GET /admin/adapters' last_promotion). The clients' starts are spread
over ``--stagger-s``: started together they stay in lockstep.

With ``--replicas N``: memoryd runs N managed vLLM replicas, and the same
streaming load alternates between memoryd (spread over all N, least
outstanding) and one of the replicas directly (one engine): the throughput
ratio is what the extra replicas buy on this host.

    .venv/bin/python bench/serve.py [--concurrency 1 8 32] [--requests 64] [--tokens 32]
                                    [--promotions 3] [--swap-clients 32] [--stagger-s 8]
                                    [--swap-only] [--replicas 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import ROOT, Daemon, daemon_env, deliver_recurring, free_port, wait_for_run

PROMPT = "Write a short paragraph about the history of bridges."
SWAP_FACT = "The harbour master of Quillport is Edda Marrowind."
# Small real consolidations: the swap bench needs adapters on disk, not good ones.
SMALL_RUN = {
    "routing": "always",
    "consolidation__training__epochs": "1",
    "consolidation__training__min_steps": "0",
    "consolidation__training__phrasings_per_question": "1",
    "consolidation__training__replay_examples": "8",
    "consolidation__gates__efficacy_min": "0",
    "consolidation__gates__generalization_min": "0",
    "consolidation__gates__retention_min": "0",
    "consolidation__gates__adapter_retention_min": "0",
    "consolidation__gates__passages_below_base_max": "1000",
    "consolidation__gates__general_kl_max": "1000",
}


def streaming_body(model: str, tokens: int) -> dict[str, object]:
    """The fixed load: one prompt, exactly ``tokens`` tokens out, greedy, streamed."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }


async def one(client: httpx.AsyncClient, url: str, tokens: int) -> tuple[float, float, int]:
    body = streaming_body("base", tokens)
    start = time.perf_counter()
    first = 0.0
    chunks = 0
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]" and '"content"' in line:
                if not first:
                    first = time.perf_counter() - start
                chunks += 1
    return first, time.perf_counter() - start, chunks


async def load(url: str, concurrency: int, requests: int, tokens: int) -> dict[str, float]:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def bounded() -> tuple[float, float, int]:
            async with gate:
                return await one(client, url, tokens)

        await one(client, url, tokens)  # warm the connection and the engine
        started = time.perf_counter()
        results = await asyncio.gather(*(bounded() for _ in range(requests)))
        wall = time.perf_counter() - started
    ttft = sorted(r[0] for r in results)
    latency = sorted(r[1] for r in results)
    return {
        "tokens_per_s": sum(r[2] for r in results) / wall,
        "p50_ms": statistics.median(latency) * 1000,
        "p99_ms": latency[min(len(latency) - 1, int(len(latency) * 0.99))] * 1000,
        "ttft_p50_ms": statistics.median(ttft) * 1000,
    }


def hop(urls: dict[str, str], requests: int) -> dict[str, list[float]]:
    """Latency of one-token answers, one at a time: the proxy's fixed cost per request.

    The paths take turns request by request, so that drift in the engine's speed
    (the CPU engine's p50 moves by a millisecond between rounds) falls on all alike.
    """
    body = {
        "model": "base",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
        "temperature": 0,
    }
    out: dict[str, list[float]] = {name: [] for name in urls}
    with httpx.Client(timeout=60) as client:
        for url in urls.values():
            client.post(url, json=body).raise_for_status()
        for _ in range(requests):
            for name, url in urls.items():
                started = time.perf_counter()
                client.post(url, json=body).raise_for_status()
                out[name].append((time.perf_counter() - started) * 1000)
    return out


class Served(NamedTuple):
    started_at: float
    first_chunk_at: float
    model: str


async def stream_until(
    client: httpx.AsyncClient, url: str, tokens: int, stop: asyncio.Event, served: list[Served]
) -> int:
    """Stream requests back to back until ``stop``; returns how many failed."""
    failed = 0
    body = streaming_body("memoryd", tokens)
    while not stop.is_set():
        model, done = "", False
        started = time.perf_counter()
        try:
            async with client.stream("POST", url, json=body) as response:
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: ") and not model:
                        model = json.loads(line[6:])["model"]
                        served.append(Served(started, time.perf_counter(), model))
            failed += response.status_code != 200 or not done
        except httpx.HTTPError:
            failed += 1
    return failed


async def staggered(
    delay: float, client: httpx.AsyncClient, url: str, tokens: int, stop: asyncio.Event,
    served: list[Served],
) -> int:  # fmt: skip
    """A client that starts ``delay`` s late: clients started together stay in lockstep (same
    prompt, same length), and then no request starts between two batch ends."""
    await asyncio.sleep(delay)
    return await stream_until(client, url, tokens, stop, served)


async def swap_under_load(
    daemon: Daemon, clients: int, promotions: int, tokens: int, stagger_s: float
) -> None:
    url = daemon.url + "/v1/chat/completions"
    served: list[Served] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with (
        httpx.AsyncClient(timeout=600, limits=limits) as load,
        httpx.AsyncClient(base_url=daemon.url, timeout=600) as admin,
    ):
        streams = [
            asyncio.create_task(staggered(i * stagger_s / clients, load, url, tokens, stop, served))
            for i in range(clients)
        ]
        await asyncio.sleep(5 + stagger_s)
        print(
            f"{'promote':>8} {'activate s':>11} {'first new response s':>21} "
            f"{'its ttft s':>11}  steps (s)"
        )
        for i in range(promotions):
            active = (await admin.get("/admin/adapters")).json()["active"]
            target = 1 if active == "mem-v2" else 2
            started = time.perf_counter()
            response = await admin.post(f"/admin/adapters/{target}/activate")
            response.raise_for_status()
            returned = time.perf_counter() - started
            steps = response.json()["last_promotion"]["steps"]
            while not any(
                s.model == f"mem-v{target}" and s.first_chunk_at >= started for s in served
            ):
                await asyncio.sleep(0.01)
            first = min(
                (s for s in served if s.model == f"mem-v{target}" and s.first_chunk_at >= started),
                key=lambda s: s.first_chunk_at,
            )
            laps = ", ".join(f"{k} {v:.3f}" for k, v in steps.items())
            print(
                f"{'mem-v' + str(target):>8} {returned:>11.2f} "
                f"{first.first_chunk_at - started:>21.2f} "
                f"{first.first_chunk_at - first.started_at:>11.2f}  {laps}"
            )
            if i < promotions - 1:
                await asyncio.sleep(5)
        await asyncio.sleep(5)
        stop.set()
        failed = sum(await asyncio.gather(*streams))
    print(f"{len(served)} requests from {clients} streaming clients, {failed} failed")


def prepare_versions(daemon: Daemon) -> None:
    """mem-v1 and mem-v2 on disk, from two small real consolidations."""
    deliver_recurring(daemon.openai(), [SWAP_FACT])
    for run_id in (1, 2):
        daemon.admin("POST", "/admin/consolidate").raise_for_status()
        run = wait_for_run(daemon, 1200, run_id)
        if run["state"] != "promoted":
            raise SystemExit(f"consolidation {run_id} ended {run['state']}: {run}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="per round (concurrency 1: half)")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/memoryd rounds")
    parser.add_argument("--hop-requests", type=int, default=100, help="per round, per path")
    parser.add_argument("--promotions", type=int, default=3, help="0 skips the swap bench")
    parser.add_argument("--swap-clients", type=int, default=32)
    parser.add_argument(
        "--stagger-s", type=float, default=8.0, help="swap clients' starts spread over this long"
    )
    parser.add_argument(
        "--swap-only", action="store_true", help="skip the per-request and throughput rounds"
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="N > 1: N replicas against one, nothing else"
    )
    parser.add_argument(
        "--model", type=Path, default=ROOT / "var" / "models" / "SmolLM2-135M-Instruct"
    )
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="memoryd-bench-serve-"))
    env, port = daemon_env(
        state,
        args.model,
        consolidation__idle_after_s="1000000",
        engine__replicas=str(args.replicas),
        **SMALL_RUN,
    )
    daemon = Daemon(state, port, env)
    daemon.start()
    try:
        if args.replicas > 1:
            replicas(daemon, args)
            return
        if not args.swap_only:
            overhead(daemon, args)
        if args.promotions:
            prepare_versions(daemon)
            asyncio.run(
                swap_under_load(
                    daemon, args.swap_clients, args.promotions, args.tokens, args.stagger_s
                )
            )
    finally:
        daemon.stop()


def compare(targets: dict[str, str], args: argparse.Namespace) -> None:
    """The same load on each target in alternating rounds: medians, and the second over the first."""
    print(f"{'conc':>4} {'path':>10} {'tok/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'ttft50':>8}")
    first, second = targets
    for c in args.concurrency:
        n = max(c, args.requests // 2) if c == 1 else args.requests
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, url in targets.items():
                runs[name].append(asyncio.run(load(url, c, n, args.tokens)))
        summary = {
            name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for name, rs in runs.items()
        }
        for name, s in summary.items():
            print(
                f"{c:>4} {name:>10} {s['tokens_per_s']:>8.1f} {s['p50_ms']:>8.1f} "
                f"{s['p99_ms']:>8.1f} {s['ttft_p50_ms']:>8.1f}"
            )
        d, m = summary[first], summary[second]
        print(
            f"{c:>4} {'ratio':>10} {m['tokens_per_s'] / d['tokens_per_s']:>8.3f} "
            f"{m['p50_ms'] - d['p50_ms']:>+8.1f} {m['p99_ms'] - d['p99_ms']:>+8.1f} "
            f"{m['ttft_p50_ms'] - d['ttft_p50_ms']:>+8.1f}"
        )


def replicas(daemon: Daemon, args: argparse.Namespace) -> None:
    """One replica directly against all of them through memoryd, same load."""
    urls = [r["url"] for r in daemon.admin("GET", "/admin/status").json()["engine"]["replicas"]]
    print(f"{len(urls)} replicas: {', '.join(urls)}")
    compare(
        {
            "1 replica": urls[0] + "/v1/chat/completions",
            f"{len(urls)} (memoryd)": daemon.url + "/v1/chat/completions",
        },
        args,
    )


def overhead(daemon: Daemon, args: argparse.Namespace) -> None:
    """The per-request cost of the hop and throughput direct vs through memoryd."""
    engine = daemon.admin("GET", "/admin/status").json()["engine"]["upstream"][0]
    targets = {
        "direct": engine + "/v1/chat/completions",
        "memoryd": daemon.url + "/v1/chat/completions",
    }
    passthrough_port = free_port()
    passthrough = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "passthrough.py"), str(passthrough_port),
         engine.rsplit(":", 1)[1]]
    )  # fmt: skip
    hop_targets = {
        **targets,
        "bare hop": f"http://127.0.0.1:{passthrough_port}/v1/chat/completions",
    }
    time.sleep(2)
    hops = hop(hop_targets, args.hop_requests * args.rounds)
    passthrough.terminate()
    p50 = {name: statistics.median(values) for name, values in hops.items()}
    print(f"per-request cost (1 token, not streamed, {len(hops['direct'])} requests each):")
    for name in hop_targets:
        print(f"  {name:>8} p50 {p50[name]:.2f} ms, added {p50[name] - p50['direct']:+.2f} ms")
    compare(targets, args)


if __name__ == "__main__":
    main()
