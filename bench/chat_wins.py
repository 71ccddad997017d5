"""Chat wins: chat latency while a consolidation runs, against the same chat when idle.

Starts a real memoryd, measures a chat request every few seconds while nothing
else runs (idle), then delivers recurring facts, starts a consolidation and
keeps the same chat going until the run ends. Each request during the run is
labelled with the step the run was in (data, train, evaluate, ...). A request
that arrives while the consolidator works pauses it (SIGSTOP); it resumes
after ``--idle-after`` seconds without chat. Prints p50/p90 per phase and the
ratio to idle; the target is p50 within 1.5x of idle.

    .venv/bin/python bench/chat_wins.py [--facts 3] [--interval 4] [--idle-after 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.knowledge import read_tsv
from daemon.memory.records import RunState
from tests.harness import ROOT, Daemon, daemon_env, deliver_recurring

BODY = {
    "model": "base",
    "messages": [{"role": "user", "content": "Write a short paragraph about rivers."}],
    "max_tokens": 32,
    "ignore_eos": True,
    "temperature": 0,
}


def chat_ms(daemon: Daemon) -> float:
    started = time.perf_counter()
    daemon.admin("POST", "/v1/chat/completions", json=BODY).raise_for_status()
    return (time.perf_counter() - started) * 1000


def current_step(daemon: Daemon, run_id: int) -> str | None:
    """The step the run is in, or None once it has ended."""
    run = daemon.admin("GET", f"/admin/consolidations/{run_id}").json()
    if RunState(run["state"]).settled:
        return None
    return str(run["steps"][-1]["name"]) if run["steps"] else "start"


def summary(name: str, values: list[float], idle_p50: float) -> str:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"{name:>12} {len(values):>5} {p50:>8.1f} {p90:>8.1f} {p50 / idle_p50:>8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--facts", type=int, default=3)
    parser.add_argument("--interval", type=float, default=4.0, help="seconds between chats")
    parser.add_argument("--idle-requests", type=int, default=15)
    parser.add_argument("--idle-after", type=float, default=1.0)
    parser.add_argument(
        "--model", type=Path, default=ROOT / "var" / "models" / "SmolLM2-135M-Instruct"
    )
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="memoryd-bench-chat-"))
    env, port = daemon_env(
        state,
        args.model,
        consolidation__idle_after_s=str(args.idle_after),
        consolidation__check_interval_s="0.5",
    )
    daemon = Daemon(state, port, env)
    daemon.start()
    try:
        daemon.admin("POST", "/admin/pause").raise_for_status()  # no idle-triggered runs yet
        chat_ms(daemon)  # warm up
        idle = []
        for _ in range(args.idle_requests):
            idle.append(chat_ms(daemon))
            time.sleep(args.interval)
        facts = read_tsv(ROOT / "bench" / "facts.tsv")[: args.facts]
        deliver_recurring(daemon.openai(), [fact for fact, _, _ in facts])
        time.sleep(args.interval)
        run_id = daemon.admin("POST", "/admin/consolidate").json()["run"]
        during: dict[str, list[float]] = defaultdict(list)
        started = time.monotonic()
        while (step := current_step(daemon, run_id)) is not None:
            during[step].append(chat_ms(daemon))
            time.sleep(args.interval)
        run = daemon.admin("GET", f"/admin/consolidations/{run_id}").json()
        idle_p50 = statistics.median(idle)
        print(f"{'phase':>12} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'x idle':>8}")
        print(summary("idle", idle, idle_p50))
        for step, values in during.items():
            print(summary(step, values, idle_p50))
        print(summary("all of run", [v for vs in during.values() for v in vs], idle_p50))
        steps = ", ".join(f"{s['name']} {s['seconds']} s" for s in run["steps"])
        print(
            f"consolidation {run_id} {run['state']} in {time.monotonic() - started:.0f} s "
            f"with a chat every {args.interval:g} s (steps: {steps})"
        )
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
