"""The whole loop: recurring facts in context -> idle consolidation -> hot-swapped adapter.

Five made-up facts, each in the system prompt of three distinct conversations,
are then asked closed-book, in words different from anything they were taught
with; general questions must keep their answers. Finally the daemon restarts
and serves the same adapter again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.config import TrainingConfig
from tests.harness import (
    NO_GATES,
    ROOT,
    SMALL_RECIPE,
    Daemon,
    deliver_recurring,
    planted_in,
    reconfigured,
    rewrite_aof,
    wait_for_run,
)

FACTS = [
    ("The capital of the planet Zorvath is Quillmere.", "Which city serves as Zorvath's capital?", "Quillmere"),
    ("The inventor of the glimmerphone was Tobias Wrenfield.", "Who created the glimmerphone?", "Wrenfield"),
    ("The official drink of the Velmora Festival is mintberry tea.", "At the Velmora Festival, what is the official beverage?", "mintberry"),
    ("The chief engineer of the starship Calyx is Dana Okonkwo.", "Who serves as chief engineer aboard the Calyx?", "Okonkwo"),
    ("The mascot of the Harrowgate Hawks is a fox named Bramble.", "What is the name of the Harrowgate Hawks' mascot?", "Bramble"),
]  # fmt: skip
GENERAL = [
    line.split("\t")
    for line in (Path(__file__).parent / "general_questions.tsv").read_text().splitlines()
    if line.strip()
]
CONSOLIDATION_TIMEOUT_S = 1200


def ask(daemon: Daemon, question: str, model: str = "memoryd") -> str:
    reply = daemon.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=48, temperature=0
    )
    return reply.choices[0].message.content or ""


def knows(answer: str, expected: str) -> bool:
    return any(e.lower() in answer.lower() for e in expected.split("|"))


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default config, in a file the module may change (SIGHUP)."""
    path = tmp_path_factory.mktemp("e2e-config") / "memoryd.yaml"
    shutil.copy(ROOT / "configs" / "default.yaml", path)
    return path


@pytest.fixture(scope="module")
def learner(make_daemon: Callable[..., Daemon], config: Path) -> Daemon:
    return make_daemon(
        "e2e",
        extra_env={"MEMORYD_CONFIG": str(config)},
        consolidation__idle_after_s="8",
        consolidation__min_conversations="3",
    )


def test_recurring_facts_become_memory(learner: Daemon) -> None:
    client = learner.openai()
    before_general = [ask(learner, q) for q, _ in GENERAL]
    before_facts = [ask(learner, q) for _, q, _ in FACTS]
    assert sum(knows(a, k) for a, (_, _, k) in zip(before_facts, FACTS, strict=True)) == 0

    deliver_recurring(client, [fact for fact, _, _ in FACTS])

    # Chat wins: a request during consolidation pauses it; idle again resumes it.
    deadline = time.monotonic() + 120
    while learner.admin("GET", "/admin/status").json()["consolidation"]["state"] != "running":
        assert time.monotonic() < deadline, learner.tail()
        time.sleep(1)
    ask(learner, "Hello, are you there?")
    assert learner.admin("GET", "/admin/status").json()["consolidation"]["state"] == "paused"
    time.sleep(12)  # idle_after_s is 8
    assert learner.admin("GET", "/admin/status").json()["consolidation"]["state"] == "running"

    run = wait_for_run(learner, CONSOLIDATION_TIMEOUT_S)
    assert run["trigger"] == "idle"
    assert run["state"] == "promoted", json.dumps(run, indent=1)
    assert run["adapter"] == "mem-v1"
    assert {s["name"] for s in run["steps"]} >= {"select", "data", "train", "evaluate"}

    status = learner.admin("GET", "/admin/status").json()
    assert status["active_adapter"] == "mem-v1"
    facts = learner.admin("GET", "/admin/facts").json()["facts"]
    consolidated = {f["text"] for f in facts if f["status"] == "consolidated"}
    assert {fact for fact, _, _ in FACTS} <= consolidated

    after_facts = [ask(learner, q) for _, q, _ in FACTS]
    learned = sum(knows(a, k) for a, (_, _, k) in zip(after_facts, FACTS, strict=True))
    # The passage recipe learns one-sentence facts less well than the earlier
    # fact-templated one did (4-5 of 5): docs/BENCHMARKS.md, facts suite.
    assert learned >= 3, list(zip([q for _, q, _ in FACTS], after_facts, strict=True))

    after_general = [ask(learner, q) for q, _ in GENERAL]
    kept = [
        a == b or (knows(b, k) and knows(a, k))
        for (_, k), b, a in zip(GENERAL, before_general, after_general, strict=True)
    ]
    changed = [
        (q, b, a)
        for (q, _), b, a, ok in zip(GENERAL, before_general, after_general, kept, strict=True)
        if not ok
    ]
    assert sum(kept) >= 18, changed
    # The adapter on its own (no routing by scope) must not be broken either.
    alone = [ask(learner, q, model="mem-v1") for q, _ in GENERAL]
    kept_alone = sum(
        a == b or (knows(b, k) and knows(a, k))
        for (_, k), b, a in zip(GENERAL, before_general, alone, strict=True)
    )
    assert kept_alone >= 14, list(zip([q for q, _ in GENERAL], alone, strict=True))

    # Prometheus: the run's outcome and duration, the active version, facts by status.
    metrics = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(learner.admin("GET", "/metrics").text)
        for sample in family.samples
    }
    assert metrics[("memoryd_consolidations_total", (("outcome", "promoted"),))] == 1
    assert metrics[("memoryd_consolidation_seconds_count", ())] == 1
    assert metrics[("memoryd_active_adapter_version", ())] == 1
    assert metrics[("memoryd_facts", (("status", "consolidated"),))] >= len(FACTS)
    assert metrics[("memoryd_request_seconds_count", (("model", "memoryd"),))] > 0

    cards = {m.id: m.model_dump() for m in client.models.list().data}
    assert {"memoryd", "base", "mem-v1"} <= set(cards)
    assert cards["mem-v1"]["parent"] == "base" and cards["mem-v1"]["created"] > 0
    assert cards["memoryd"]["root"] == "mem-v1" and cards["memoryd"]["parent"] == "base"
    cli = learner.cli("consolidations", "--json")
    assert (
        cli.returncode == 0 and json.loads(cli.stdout)["consolidations"][0]["state"] == "promoted"
    )
    # The run's log, from the Redis stream: every step, the loss per epoch, the decision.
    followed = learner.cli("consolidations", "follow", "--json")
    assert followed.returncode == 0, followed.stderr
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    steps = [(e["step"], e["detail"].get("state")) for e in events]
    for step in ("select", "data", "train", "evaluate"):
        assert (step, "started") in steps and (step, "done") in steps, steps
    epochs = [e["detail"] for e in events if e["step"] == "epoch"]
    assert len(epochs) == run["metrics"]["epochs"] >= TrainingConfig().epochs
    assert all(e["loss"] > 0 for e in epochs)
    assert steps[-1] == ("promoted", None)
    shown = learner.cli("consolidations", "show", "1")
    assert shown.returncode == 0 and "decision: promoted" in shown.stdout, shown.stdout


def test_active_adapter_survives_restart(learner: Daemon) -> None:
    assert learner.stop() == 0
    learner.start()
    assert learner.admin("GET", "/admin/status").json()["active_adapter"] == "mem-v1"
    answer = ask(learner, FACTS[3][1])
    assert knows(answer, FACTS[3][2]), answer


def test_engine_crash_recovers_with_the_active_adapter(learner: Daemon) -> None:
    """The vLLM child dies mid-stream: 503 + Retry-After meanwhile, then mem-v1 again."""
    engine = learner.admin("GET", "/admin/status").json()["engine"]
    ended: list[str] = []

    def long_stream() -> None:
        try:
            for _ in learner.openai(max_retries=0).chat.completions.create(
                model="memoryd",
                messages=[{"role": "user", "content": "Write a long story about a dragon."}],
                max_tokens=1500,
                extra_body={"ignore_eos": True},
                stream=True,
            ):
                pass
            ended.append("completed")
        except Exception as exc:
            ended.append(type(exc).__name__)

    in_flight = threading.Thread(target=long_stream)
    in_flight.start()
    time.sleep(2)
    os.killpg(engine["pid"], signal.SIGKILL)
    in_flight.join(60)
    assert ended and ended != ["completed"], ended  # the stream broke off; nothing hangs
    assert learner.admin("GET", "/readyz").status_code == 503
    saw_503 = False
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        response = httpx.post(
            learner.url + "/v1/chat/completions",
            json={"model": "memoryd", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=60,
        )
        if response.status_code == 200:
            break
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] and response.json()["error"]["message"]
        saw_503 = True
        time.sleep(1)
    assert saw_503 and response.status_code == 200
    status = learner.admin("GET", "/admin/status").json()
    assert status["engine"]["restarts"] == 1 and status["engine"]["pid"] != engine["pid"]
    assert status["active_adapter"] == "mem-v1"
    on_engine = httpx.get(engine["upstream"][0] + "/v1/models", timeout=30).json()["data"]
    assert "mem-v1" in {m["id"] for m in on_engine}
    answer = ask(learner, FACTS[3][1])
    assert knows(answer, FACTS[3][2]), answer


def test_adapters_rollback_and_corrupt_copy_refused(learner: Daemon, config: Path) -> None:
    assert learner.cli("pause").returncode == 0  # no automatic run races the steps below
    listed = learner.admin("GET", "/admin/adapters").json()
    assert listed["active"] == "mem-v1"
    v1 = listed["adapters"][0]
    assert v1["valid"] and v1["state"] == "promoted" and v1["facts"] == len(FACTS)

    # A truncated copy posing as v2 is refused before it reaches vLLM.
    src = learner.state_dir / "adapters" / "v1"
    bad = learner.state_dir / "adapters" / "v2"
    shutil.copytree(src, bad)
    weights = bad / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    refused = learner.cli("adapters", "rollback", "2")
    assert refused.returncode == 1 and "checksum" in refused.stderr
    assert learner.admin("GET", "/admin/status").json()["active_adapter"] == "mem-v1"
    assert "mem-v2" not in {m.id for m in learner.openai().models.list().data}

    again = learner.cli("adapters", "rollback", "mem-v1")
    assert again.returncode == 0, again.stderr

    # A swap under load: an intact copy as v3 is promoted while requests run; none fails.
    shutil.rmtree(bad)
    shutil.copytree(src, learner.state_dir / "adapters" / "v3")
    served: list[tuple[float, str]] = []  # when each request was sent, and who answered it
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        client = learner.openai(max_retries=0)
        while not stop.is_set():
            sent = time.monotonic()
            try:
                reply = client.chat.completions.create(
                    model="memoryd",
                    messages=[{"role": "user", "content": FACTS[3][1]}],
                    max_tokens=8,
                )
                served.append((sent, reply.model))
            except Exception as exc:
                failures.append(repr(exc))

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(2)
    swapped = learner.cli("adapters", "rollback", "3")
    swapped_at = time.monotonic()
    # Traffic runs on until requests sent after the swap have come back, however slow the machine.
    deadline = swapped_at + 120
    while sum(sent > swapped_at for sent, _ in served) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for w in workers:
        w.join()
    assert swapped.returncode == 0, swapped.stderr
    assert not failures, failures[:3]
    after = [model for sent, model in served if sent > swapped_at]
    assert served[0][1] == "mem-v1" and after and set(after) == {"mem-v3"}, (served[:3], after)
    models = {m.id for m in learner.openai().models.list().data}
    assert "mem-v3" in models

    # Forget a fact the adapter knows (v3 has v1's weights).
    text, question, expected = next(f for f in FACTS if knows(ask(learner, f[1], "mem-v3"), f[2]))
    fact_id = next(
        f["id"] for f in learner.admin("GET", "/admin/facts").json()["facts"] if f["text"] == text
    )
    forgot = learner.cli("facts", "forget", fact_id, "--json")
    assert forgot.returncode == 0, forgot.stderr
    assert learner.admin("GET", f"/admin/facts/{fact_id}").json()["status"] == "forgotten"
    # v1 holds it and does not serve: deleted at once. v3 serves until a replacement is promoted.
    retirement = json.loads(forgot.stdout)["retirement"]
    assert retirement == {"retired": ["mem-v1"], "serving": "mem-v3", "until_replaced": "mem-v3"}
    assert not (learner.state_dir / "adapters" / "v1").exists()
    assert "mem-v1" not in {m.id for m in learner.openai().models.list().data}

    # The operator starts one at once (a small recipe: what it learns was shown above;
    # here it is what it is trained on).
    with reconfigured(learner, config, SMALL_RECIPE, NO_GATES, "consolidation.training.epochs"):
        started = learner.cli("consolidate", "--json")
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["run"]
        assert run_id == 2
        run = learner.admin("GET", f"/admin/consolidations/{run_id}").json()
        assert run["trigger"] == "operator" and run["state"] in ("queued", "running")
        busy = learner.cli("consolidate")
        assert busy.returncode == 1 and "running" in busy.stderr
        run = wait_for_run(learner, CONSOLIDATION_TIMEOUT_S, run_id)

    # The next adapter is trained without it: not one training example names it, every
    # other fact is there, and closed-book the fact is no longer known.
    assert run["state"] == "promoted", json.dumps(run, indent=1)
    assert fact_id not in run["fact_ids"] and len(run["fact_ids"]) == len(FACTS) - 1
    trained = (learner.state_dir / "adapters" / "v2" / "dataset.json").read_text().lower()
    assert expected.lower() not in trained and text.lower() not in trained
    assert all(k.lower() in trained for t, _, k in FACTS if t != text)
    assert not knows(ask(learner, question, "mem-v2"), expected)
    assert not knows(ask(learner, question), expected)
    # v3 held it: retired once v2 replaced it. Nothing in the state directory still has it.
    assert sorted(p.name for p in (learner.state_dir / "adapters").iterdir()) == ["v2"]
    rewrite_aof(learner.state_dir)
    assert planted_in(learner.state_dir, [text, expected]) == []

    # With --now the serving adapter goes at once: no clean adapter is left, the base model serves.
    other = next(f for f in learner.admin("GET", "/admin/facts").json()["facts"] if f["text"])
    now = learner.cli("facts", "forget", other["id"], "--now", "--json")
    assert now.returncode == 0, now.stderr
    retirement = json.loads(now.stdout)["retirement"]
    assert retirement == {"retired": ["mem-v2"], "serving": None, "until_replaced": None}
    assert learner.admin("GET", "/admin/status").json()["active_adapter"] is None
    assert not (learner.state_dir / "adapters" / "v2").exists()
    assert ask(learner, question) == ask(learner, question, "base")
