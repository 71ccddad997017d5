"""The whole loop: recurring facts in context -> idle consolidation -> hot-swapped adapter.

Five made-up facts, each in the system prompt of three distinct conversations,
are then asked closed-book, in words different from anything they were taught
with; general questions must keep their answers. Finally the daemon restarts
and serves the same adapter again.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import Daemon, deliver_recurring, wait_for_run

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
def learner(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon("e2e", consolidation__idle_after_s="8", consolidation__min_conversations="3")


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
    assert learned >= 4, list(zip([q for _, q, _ in FACTS], after_facts, strict=True))

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

    cards = {m.id: m.model_dump() for m in client.models.list().data}
    assert {"memoryd", "base", "mem-v1"} <= set(cards)
    assert cards["mem-v1"]["parent"] == "base" and cards["mem-v1"]["created"] > 0
    assert cards["memoryd"]["root"] == "mem-v1" and cards["memoryd"]["parent"] == "base"
    cli = learner.cli("consolidations", "--json")
    assert (
        cli.returncode == 0 and json.loads(cli.stdout)["consolidations"][0]["state"] == "promoted"
    )


def test_active_adapter_survives_restart(learner: Daemon) -> None:
    assert learner.stop() == 0
    learner.start()
    assert learner.admin("GET", "/admin/status").json()["active_adapter"] == "mem-v1"
    answer = ask(learner, FACTS[3][1])
    assert knows(answer, FACTS[3][2]), answer


def test_adapters_rollback_and_corrupt_copy_refused(learner: Daemon) -> None:
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
    served: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        client = learner.openai(max_retries=0)
        while not stop.is_set():
            try:
                reply = client.chat.completions.create(
                    model="memoryd",
                    messages=[{"role": "user", "content": FACTS[3][1]}],
                    max_tokens=8,
                )
                served.append(reply.model)
            except Exception as exc:
                failures.append(repr(exc))

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(2)
    swapped = learner.cli("adapters", "rollback", "3")
    time.sleep(2)
    stop.set()
    for w in workers:
        w.join()
    assert swapped.returncode == 0, swapped.stderr
    assert not failures, failures[:3]
    assert served[0] == "mem-v1" and served[-1] == "mem-v3", (served[:3], served[-3:])
    models = {m.id for m in learner.openai().models.list().data}
    assert "mem-v3" in models

    fact_id = next(
        f["id"]
        for f in learner.admin("GET", "/admin/facts").json()["facts"]
        if f["text"] == FACTS[0][0]
    )
    forgot = learner.cli("facts", "forget", fact_id)
    assert forgot.returncode == 0, forgot.stderr
    assert learner.admin("GET", f"/admin/facts/{fact_id}").json()["status"] == "forgotten"

    # The operator starts one at once.
    started = learner.cli("consolidate", "--json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run"]
    assert run_id == 2
    run = learner.admin("GET", f"/admin/consolidations/{run_id}").json()
    assert run["trigger"] == "operator" and run["state"] == "running"
    busy = learner.cli("consolidate")
    assert busy.returncode == 1 and "running" in busy.stderr
