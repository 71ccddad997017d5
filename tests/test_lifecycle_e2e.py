"""A run's lifecycle and the supervisor, shown on the real processes of a running daemon.

A hung vLLM child is replaced while chat gets 503s; a second worker on a run
leaves it to the first; a daemon SIGKILLed after its run passed promotes that
adapter after the restart without training again; a fact set whose consolidator
is SIGKILLed on every try is left alone after ``max_tries``; with
``consolidation.runner: workers`` a run waits queued until a worker service
(consolidator.service) takes it, and the daemon promotes what it passed. One
daemon, a small training recipe and gates at 0, as in test_faults.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from daemon.contract import EXIT_CLAIMED, Keys, WorkerArgs
from daemon.engine.adapters import MANIFEST
from daemon.memory.lifecycle import NOT_RETRIED
from daemon.memory.records import Consolidation, RunState
from tests.harness import (
    NO_GATES,
    RUN_TIMEOUT_S,
    SMALL_RECIPE,
    Daemon,
    deliver_recurring,
    gone,
    run_events,
    running_run,
    status,
    wait_event,
    wait_for_run,
    wait_until,
    write_config,
)

FACTS = [
    "The ferry to Holm Island leaves from quay four.",
    "The mayor of Holm Island is Petra Lindqvist.",
    "The Holm Island lighthouse was built in 1873.",
    "The Holm Island library lends bicycles to visitors.",
]
LIVENESS_INTERVAL_S = 2.0  # each probe also waits this long at most
HUNG_AFTER = 3
MAX_TRIES = 2
IDLE_AFTER_S = 3


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lifecycle-config") / "memoryd.yaml"
    write_config(path, {**SMALL_RECIPE, "epochs": 1}, NO_GATES)
    return path


@pytest.fixture(scope="module")
def daemon(make_daemon: Callable[..., Daemon], config: Path) -> Daemon:
    return make_daemon(
        "lifecycle",
        extra_env={"MEMORYD_CONFIG": str(config)},
        engine__liveness_interval_s=str(LIVENESS_INTERVAL_S),
        engine__hung_after=str(HUNG_AFTER),
        consolidation__idle_after_s=str(IDLE_AFTER_S),
        consolidation__min_conversations="3",
        consolidation__max_tries=str(MAX_TRIES),
    )


def chat(daemon: Daemon) -> httpx.Response:
    body = {"model": "memoryd", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    return httpx.post(daemon.url + "/v1/chat/completions", json=body, timeout=60)


def newest_run(daemon: Daemon) -> int:
    runs = daemon.admin("GET", "/admin/consolidations").json()["consolidations"]
    return int(runs[0]["id"]) if runs else 0


def redis_of(daemon: Daemon) -> redis.Redis:
    """The private redis-server, reached on its socket (it answers while the daemon is stopped)."""
    sock = daemon.state_dir / "redis" / "redis.sock"
    return redis.Redis(unix_socket_path=str(sock), decode_responses=True)


def test_a_hung_engine_is_replaced_while_chat_gets_503s(daemon: Daemon) -> None:
    assert chat(daemon).status_code == 200
    before = status(daemon)["engine"]
    os.killpg(before["pid"], signal.SIGSTOP)  # hung: alive, answering nothing
    hung_at = time.monotonic()

    wait_until("the hang to be noticed", lambda: not status(daemon)["engine"]["ready"], 60, daemon)
    noticed_s = time.monotonic() - hung_at
    # HUNG_AFTER probes in a row, each up to LIVENESS_INTERVAL_S apart and as long to time out.
    assert noticed_s <= HUNG_AFTER * 2 * LIVENESS_INTERVAL_S + 3, noticed_s
    wait_until("the hung vLLM group to be killed", lambda: gone(before["pid"]), 30, daemon)

    refused = chat(daemon)
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) > 0
    error = refused.json()["error"]
    assert error["type"] == "server_error" and "restarting" in error["message"]
    assert httpx.get(daemon.url + "/readyz", timeout=10).status_code == 503

    def replaced() -> bool:
        engine = status(daemon)["engine"]
        return bool(engine["ready"] and engine["pid"] not in (None, before["pid"]))

    wait_until("a new vLLM child", replaced, 300, daemon)
    assert status(daemon)["engine"]["restarts"] == before["restarts"] + 1
    assert chat(daemon).status_code == 200
    assert f"vLLM hung ({HUNG_AFTER} liveness probes failed in a row)" in daemon.tail(200)


def test_a_second_worker_on_a_claimed_run_leaves_it_alone(daemon: Daemon) -> None:
    deliver_recurring(daemon.openai(), FACTS[:1], max_tokens=4)
    run, child = running_run(daemon, after=newest_run(daemon))
    wait_event(daemon, run, RunState.running.value)  # the daemon's child holds the claim
    second = WorkerArgs(
        settings=daemon.state_dir / "run" / f"settings-{run}.json",
        run_id=run,
        redis_url=f"unix://{daemon.state_dir / 'redis' / 'redis.sock'}",
        engine_url=f"http://127.0.0.1:{daemon.env['MEMORYD_ENGINE__PORT']}",
    )
    done = subprocess.run(
        second.argv(), env=daemon.env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == EXIT_CLAIMED, done.stderr
    # Claimed by the daemon's child, or (if that one was quicker) no longer queued.
    assert f":{child}:" in done.stderr or "nothing to do" in done.stderr, done.stderr

    finished = wait_for_run(daemon, RUN_TIMEOUT_S, run)
    assert finished["state"] == RunState.promoted.value, finished
    steps = [e["step"] for e in run_events(daemon, run)]
    assert steps.count(RunState.running.value) == 1 and steps.count("epoch") == 1, steps


def test_a_daemon_killed_after_its_run_passed_promotes_it_after_the_restart(
    daemon: Daemon,
) -> None:
    deliver_recurring(daemon.openai(), FACTS[1:2], max_tokens=4)
    run, _ = running_run(daemon, after=newest_run(daemon))
    children = [status(daemon)["engine"]["pid"], status(daemon)["redis"]["pid"]]
    assert daemon.proc is not None
    # Stopped, the daemon cannot act on the verdict: the run stays passed, unpromoted.
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    key = Keys("memoryd").run(run)
    with redis_of(daemon) as r:

        def passed() -> bool:
            raw = r.get(key)
            return bool(raw and Consolidation.model_validate_json(raw).state == RunState.passed)

        try:
            wait_until(f"run {run} to pass", passed, RUN_TIMEOUT_S, daemon)
        except AssertionError:
            os.kill(daemon.proc.pid, signal.SIGCONT)  # the next tests need it
            raise
    manifest = daemon.state_dir / "adapters" / f"v{run}" / MANIFEST
    written = manifest.stat().st_mtime_ns
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait()
    # Its children go with it (as systemd would see to): whatever is left is killed.
    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    daemon.start()
    promoted = wait_for_run(daemon, 60, run)
    assert promoted["state"] == RunState.promoted.value, promoted
    assert newest_run(daemon) == run  # nothing queued or trained again
    steps = [e["step"] for e in run_events(daemon, run)]
    assert steps.count("epoch") == 1 and steps[-1] == RunState.promoted.value, steps
    assert manifest.stat().st_mtime_ns == written  # the adapter on disk, not a new one
    assert status(daemon)["active_version"] == run
    reply = daemon.openai().chat.completions.create(
        model=f"mem-v{run}", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content


def test_a_consolidator_killed_on_every_try_is_left_alone_after_max_tries(
    daemon: Daemon,
) -> None:
    after = newest_run(daemon)
    deliver_recurring(daemon.openai(), FACTS[2:3], max_tokens=4)
    killed = []
    for _ in range(MAX_TRIES):
        run, child = running_run(daemon, after=after)
        os.killpg(child, signal.SIGKILL)
        killed.append(after := run)
        wait_for_run(daemon, 60, run)
    runs = {
        r["id"]: r for r in daemon.admin("GET", "/admin/consolidations").json()["consolidations"]
    }
    first, last = (runs[i] for i in killed)
    assert first["state"] == last["state"] == RunState.failed.value
    assert first["fingerprint"] == last["fingerprint"]
    assert f"killed by SIGKILL (try 1 of {MAX_TRIES})" in first["error"]
    reason = f"killed by SIGKILL on {MAX_TRIES} tries; {NOT_RETRIED}"
    assert last["error"] == reason

    # Idle for several checks: no further run of this fact set.
    time.sleep(IDLE_AFTER_S + 10)
    assert newest_run(daemon) == killed[-1]
    assert status(daemon)["consolidation"]["pid"] is None
    shown = daemon.cli("consolidations", "show", str(killed[-1]))
    assert shown.returncode == 0, shown.stderr
    assert reason in " ".join(shown.stdout.split())


def test_with_workers_a_run_waits_for_one_and_its_verdict_is_promoted(
    daemon: Daemon, config: Path
) -> None:
    """consolidation.runner: workers (applied by SIGHUP): the daemon queues, a worker trains."""
    settings = yaml.safe_load(config.read_text())
    settings["consolidation"]["runner"] = "workers"
    config.write_text(yaml.safe_dump(settings))
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until("the reload", lambda: "consolidation.runner" in daemon.tail(20), 30, daemon)

    after = newest_run(daemon)
    deliver_recurring(daemon.openai(), FACTS[3:4], max_tokens=4)
    run = wait_until(
        "a queued run", lambda: newest_run(daemon) > after and newest_run(daemon), 120, daemon
    )
    time.sleep(IDLE_AFTER_S + 5)  # several idle checks: it waits, nothing runs it here
    waiting = daemon.admin("GET", f"/admin/consolidations/{run}").json()
    assert waiting["state"] == RunState.queued.value, waiting
    assert status(daemon)["consolidation"]["pid"] is None and newest_run(daemon) == run

    socket = daemon.state_dir / "redis" / "redis.sock"
    worker = subprocess.Popen(
        [sys.executable, "-m", "consolidator.service", "--config", str(config),
         "--redis-url", f"unix://{socket}", "--poll-s", "0.5",
         "--engine-url", status(daemon)["engine"]["upstream"][0]],
        env=daemon.env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        finished = wait_for_run(daemon, RUN_TIMEOUT_S, run)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, log = worker.communicate(timeout=60)
        settings["consolidation"]["runner"] = "child"
        config.write_text(yaml.safe_dump(settings))
        daemon.proc.send_signal(signal.SIGHUP)
    assert finished["state"] == RunState.promoted.value, (finished, log[-3000:])
    assert worker.returncode == 0, log[-3000:]
    assert f"consolidation {run} of tenant default taken" in log
    assert status(daemon)["active_version"] == run
    steps = [e["step"] for e in run_events(daemon, run)]
    assert steps.count(RunState.running.value) == 1 and steps[-1] == RunState.promoted.value
