"""Faults lose nothing: each one done to the real processes of a running daemon.

The consolidator SIGKILLed mid-training, the disk filling up while an adapter is
saved, the private redis-server SIGKILLed, and SIGTERM during a run. The daemon
consolidates on its own after 5 idle seconds, with a small training recipe and
its gates at 0: these tests are about what survives, not about what is learned
(test_e2e.py covers that).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    NO_GATES,
    RUN_TIMEOUT_S,
    SMALL_RECIPE,
    Daemon,
    deliver_recurring,
    gone,
    reconfigured,
    run_events,
    running_run,
    status,
    wait_event,
    wait_for_run,
    wait_until,
    write_config,
)

FACTS = [
    "The harbour master of Port Elsmere is Ines Marlowe.",
    "The night ferry to Port Elsmere leaves from pier eleven.",
    "The lighthouse keeper of Port Elsmere is Oskar Brandt.",
]
FILE_LIMIT_BYTES = 1 << 20  # a LoRA adapter of the bundled model is about 20 MiB


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults-config") / "memoryd.yaml"
    write_config(path, SMALL_RECIPE, NO_GATES)
    return path


@pytest.fixture(scope="module")
def faulty(make_daemon: Callable[..., Daemon], config_file: Path) -> Daemon:
    return make_daemon(
        "faults",
        extra_env={"MEMORYD_CONFIG": str(config_file)},
        consolidation__idle_after_s="5",
        consolidation__min_conversations="3",
    )


def step_detail(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next(dict(s["detail"]) for s in run["steps"] if s["name"] == name)


def assert_nothing_left_of(daemon: Daemon, version: int) -> None:
    def done_with_it() -> bool:
        c = status(daemon)["consolidation"]
        return bool(c["pid"] is None or c["run"] != version)

    wait_until(f"the daemon to be done with run {version}", done_with_it, 60, daemon)
    adapters = daemon.state_dir / "adapters"
    assert not (adapters / f"v{version}").exists()
    assert not (adapters / f"v{version}.partial").exists()
    served = [m.id for m in daemon.openai().models.list().data]
    assert f"mem-v{version}" not in served
    assert f"mem-v{version}" not in status(daemon)["loaded_adapters"]


def assert_serves(daemon: Daemon, version: int | None) -> None:
    s = status(daemon)
    assert s["active_version"] == version
    model = f"mem-v{version}" if version else "base"
    reply = daemon.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=4
    )
    assert reply.choices[0].message.content


def test_consolidator_killed_mid_training_fails_then_resumes(faulty: Daemon) -> None:
    deliver_recurring(faulty.openai(), FACTS[:1], max_tokens=4)
    run, pid = running_run(faulty, after=0)
    wait_event(faulty, run, "epoch", epoch=1)  # its checkpoint is on disk
    os.killpg(pid, signal.SIGKILL)

    killed = wait_for_run(faulty, 60, run)
    assert killed["state"] == "failed"
    assert "SIGKILL" in killed["error"]
    assert_nothing_left_of(faulty, run)
    assert_serves(faulty, None)

    # Tried again at the next idle moment, from the checkpoint: no new data, one epoch left.
    resumed = wait_for_run(faulty, RUN_TIMEOUT_S, run + 1)
    assert resumed["state"] == "promoted", resumed
    assert resumed["fact_ids"] == killed["fact_ids"]
    assert step_detail(resumed, "data")["from_checkpoint"] is True
    assert step_detail(resumed, "train")["resumed_from_epoch"] == 1
    assert [e["detail"]["epoch"] for e in run_events(faulty, run + 1) if e["step"] == "epoch"] == [
        2
    ]
    assert not list((faulty.state_dir / "checkpoints").iterdir())
    assert_serves(faulty, run + 1)


def test_disk_full_while_saving_the_adapter_keeps_the_old_one(faulty: Daemon) -> None:
    active = status(faulty)["active_version"]
    deliver_recurring(faulty.openai(), FACTS[1:2], max_tokens=4)
    run, pid = running_run(faulty, after=active)
    wait_event(faulty, run, "epoch", epoch=1)
    # From now on the consolidator cannot write a file past 1 MiB: the adapter
    # saved at the end of epoch 2 hits the limit, as on a full disk.
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (FILE_LIMIT_BYTES, FILE_LIMIT_BYTES))

    failed = wait_for_run(faulty, RUN_TIMEOUT_S, run)
    assert failed["state"] == "failed"
    assert "File too large" in failed["error"], failed
    assert_nothing_left_of(faulty, run)
    assert_serves(faulty, active)
    leftovers = [p for p in faulty.state_dir.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert leftovers == []


def test_an_adapter_that_forgets_is_rejected_and_the_old_one_serves(
    faulty: Daemon, config_file: Path
) -> None:
    """Trained without replay, at a high rate: it changes what the base model answered."""
    active = status(faulty)["active_version"]
    with reconfigured(
        faulty,
        config_file,
        {**SMALL_RECIPE, "replay_examples": 0, "learning_rate": 0.005},
        {**NO_GATES, "adapter_retention_min": 0.9},
        "consolidation.training.replay_examples",
    ):
        started = faulty.admin("POST", "/admin/consolidate").json()["run"]
        run = wait_for_run(faulty, RUN_TIMEOUT_S, started)
    assert run["state"] == "rejected"
    shown = faulty.cli("consolidations", "show", str(started))
    assert shown.returncode == 0, shown.stderr
    assert "decision: rejected" in shown.stdout and "adapter_retention" in shown.stdout
    assert any(r.startswith("adapter_retention") for r in run["reasons"]), run["reasons"]
    assert step_detail(run, "data").get("replay", 0) == 0
    assert_serves(faulty, active)
    assert f"mem-v{run['id']}" not in [m.id for m in faulty.openai().models.list().data]
    assert (faulty.state_dir / "adapters" / f"v{run['id']}").is_dir()  # kept, to inspect


# Statements the held-out procedure turns into questions ("Who painted the Mona
# Lisa?", "In what year did Alexander Fleming discover penicillin?") that the
# base model answers closed-book.
KNOWN_TO_BASE = (
    "Leonardo da Vinci painted the Mona Lisa. Neil Armstrong walked on the Moon in 1969. "
    "Alexander Fleming discovered penicillin in 1928. The Eiffel Tower stands in Paris."
)


def test_an_adapter_worse_than_base_on_held_out_questions_is_rejected(
    faulty: Daemon, config_file: Path
) -> None:
    """A passage the base model already knows, learned at a rate that breaks the adapter.

    The base model answers some of the passage's held-out questions closed-book
    (four well-known facts, so one unlucky answer cannot make its score 0); the
    broken adapter answers them worse, and that alone rejects it, naming the
    passage and both numbers.
    """
    active = status(faulty)["active_version"]
    runs = faulty.admin("GET", "/admin/consolidations").json()["consolidations"]
    latest = max((r["id"] for r in runs), default=0)
    with reconfigured(
        faulty,
        config_file,
        {**SMALL_RECIPE, "replay_examples": 0, "learning_rate": 0.05},
        {**NO_GATES, "passages_below_base_max": 0},
        "consolidation.gates.passages_below_base_max",
    ):
        deliver_recurring(faulty.openai(), [KNOWN_TO_BASE], max_tokens=4)
        started, _ = running_run(faulty, after=latest)
        run = wait_for_run(faulty, RUN_TIMEOUT_S, started)
    per_passage = step_detail(run, "evaluate")["per_passage"]
    assert run["state"] == "rejected", per_passage
    assert any(r.startswith("passages_below_base") for r in run["reasons"]), run["reasons"]
    named = [r for r in run["reasons"] if r.startswith("passage ") and "Mona Lisa" in r]
    assert named and "below the base model's" in named[0], run["reasons"]
    worse = [p for p in per_passage.values() if p["held_out"] < p["held_out_base"]]
    assert worse and all(p["held_out_questions"] > 0 for p in worse)
    assert_serves(faulty, active)


def test_redis_killed_and_restarted_loses_nothing(faulty: Daemon) -> None:
    before = status(faulty)
    facts_before = {
        f["id"]: f["conversations"] for f in faulty.admin("GET", "/admin/facts").json()["facts"]
    }
    runs_before = faulty.admin("GET", "/admin/consolidations").json()["consolidations"]
    assert facts_before and runs_before
    pid = before["redis"]["pid"]
    socket = faulty.state_dir / "redis" / "redis.sock"
    os.kill(pid, signal.SIGKILL)
    wait_until("redis to die", lambda: gone(pid), 10, faulty)
    # Redis stays down until the chats below were observed: a restart fails while a
    # directory holds its socket's path (the first restart comes 2 s after the kill).
    socket.unlink()
    (socket / "taken").mkdir(parents=True)
    assert status(faulty)["redis"]["ok"] is False

    sent = 4
    for i in range(sent):  # chat goes on while Redis is down
        reply = faulty.openai().chat.completions.create(
            model="memoryd",
            messages=[
                {"role": "system", "content": f"Ticket {i}: the printer on floor two is jammed."},
                {"role": "user", "content": "Any news?"},
            ],
            max_tokens=4,
        )
        assert reply.choices[0].message.content is not None
    wait_until(
        "observations to be retried while Redis is down",
        lambda: status(faulty)["observer"]["retried"] > before["observer"]["retried"],
        30,
        faulty,
    )
    assert status(faulty)["redis"]["ok"] is False
    shutil.rmtree(socket)

    after = wait_until(
        "redis to be restarted",
        # Every observation accounted for: the queue can be empty while the observer
        # still works on the last one it took.
        lambda: (
            (s := status(faulty))["redis"]["ok"]
            and s["observer"]["queued"] == 0
            and s["observer"]["failed"] + s["observer"]["observed"]
            == before["observer"]["failed"] + before["observer"]["observed"] + sent
            and s
        ),
        60,
        faulty,
    )
    assert after["redis"]["restarts"] > before["redis"]["restarts"]
    assert after["redis"]["pid"] != pid
    # Every observation made meanwhile was retried until Redis was back, and written.
    assert after["observer"]["failed"] == before["observer"]["failed"]
    assert after["observer"]["observed"] - before["observer"]["observed"] == sent
    metrics = faulty.admin("GET", "/metrics").text
    assert f"memoryd_observer_retried_total {float(after['observer']['retried'])}" in metrics
    tickets = " ".join(p["text"] for p in faulty.admin("GET", "/admin/passages").json()["passages"])
    assert all(f"Ticket {i}:" in tickets for i in range(sent))

    # What Redis acknowledged before it was killed came back from its append-only file.
    facts_after = {
        f["id"]: f["conversations"] for f in faulty.admin("GET", "/admin/facts").json()["facts"]
    }
    assert all(facts_after.get(fid, 0) >= n for fid, n in facts_before.items())
    runs_after = faulty.admin("GET", "/admin/consolidations").json()["consolidations"]
    assert [r["id"] for r in runs_after] == [r["id"] for r in runs_before]
    assert status(faulty)["active_version"] == before["active_version"]


def test_sigterm_during_a_run_exits_cleanly_and_keeps_its_checkpoint(faulty: Daemon) -> None:
    latest = faulty.admin("GET", "/admin/consolidations").json()["consolidations"][0]["id"]
    deliver_recurring(faulty.openai(), FACTS[2:3], max_tokens=4)
    run, consolidator = running_run(faulty, after=latest)
    wait_event(faulty, run, "epoch", epoch=1)
    s = status(faulty)
    children = [consolidator, s["engine"]["pid"], s["redis"]["pid"]]

    started = time.monotonic()
    assert faulty.stop() == 0
    assert time.monotonic() - started < 60
    wait_until("every child to exit", lambda: all(gone(p) for p in children), 30, faulty)
    # Recorded on the way out; the next start retries the fact set from the checkpoint
    # (resuming is shown by the SIGKILL test above).
    failed = [
        line for line in faulty.tail(40).splitlines() if f"consolidation {run}: failed" in line
    ]
    assert failed and "memoryd shut down during the run" in failed[0], faulty.tail(40)
    assert (faulty.state_dir / "adapters" / f"v{run}").exists() is False
    (checkpoint,) = (faulty.state_dir / "checkpoints").iterdir()
    assert (checkpoint / "dataset.json").is_file() and (checkpoint / "training.pt").is_file()
