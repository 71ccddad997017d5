"""The run lifecycle against a real redis-server: transitions, tries, recovery, claims."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from consolidator.worker import work
from daemon.activity import Activity
from daemon.config import ConsolidationConfig, Settings
from daemon.consolidation import Consolidator
from daemon.contract import EXIT_CLAIMED, EXIT_FAILED, EXIT_PASSED
from daemon.engine.adapters import MANIFEST, adapter_dir, adapter_name, file_hashes
from daemon.engine.swap import Swapper
from daemon.memory.lifecycle import Claim, ClaimHeld, TransitionRefused
from daemon.memory.records import AdapterManifest, Consolidation, RunState, now
from daemon.memory.store import Store, connect
from daemon.metrics import Metrics
from tests.conftest import RedisServer

S = RunState
# The machine as intended, written out here rather than read from the code under test.
ALLOWED = {
    (S.queued, S.running),
    (S.queued, S.failed),
    (S.running, S.passed),
    (S.running, S.rejected),
    (S.running, S.failed),
    (S.passed, S.promoted),
    (S.passed, S.failed),
}
LIMIT_REASON = (
    "killed by SIGKILL on 3 tries; not retried until memory changes or `memoryd consolidate`"
)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = connect(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> Store:
    return Store(redis, "t")


async def run_in(store: Store, state: RunState, fingerprint: str = "fp") -> Consolidation:
    """A run in ``state``, put there directly (the setup of a test, not a transition)."""
    run = await store.new_run("idle", fingerprint)
    run.state = state
    await store.redis.set(f"t:run:{run.id}", run.model_dump_json())
    return run


async def steps(store: Store, run_id: int) -> list[str]:
    return [e["step"] for _, e in await store.events(count=1000) if e["run"] == str(run_id)]


async def test_only_allowed_transitions_are_made(store: Store) -> None:
    for from_state in RunState:
        for to in RunState:
            run = await run_in(store, from_state)
            if (from_state, to) in ALLOWED:
                await store.transition(run, to)
                assert run.state == to
                assert (run.finished_at is not None) == to.settled
            else:
                with pytest.raises(TransitionRefused, match="may not go to"):
                    await store.transition(run, to)
                assert run.state == from_state
            stored = await store.run(run.id)
            assert stored is not None and stored == run
            expected = ["queued", to.value] if (from_state, to) in ALLOWED else ["queued"]
            assert await steps(store, run.id) == expected, (from_state, to)


async def test_a_stale_writer_is_refused_and_nothing_of_it_is_written(store: Store) -> None:
    run = await run_in(store, S.running)
    daemon_view, child_view = run.model_copy(deep=True), run.model_copy(deep=True)
    await store.transition(daemon_view, S.failed, error="the daemon stopped")
    child_view.metrics["efficacy"] = 1.0
    with pytest.raises(TransitionRefused, match="is failed, not running"):
        await store.save_progress(child_view)
    with pytest.raises(TransitionRefused, match="is failed, not running"):
        await store.transition(child_view, S.passed)
    stored = await store.run(run.id)
    assert stored is not None
    assert (stored.state, stored.error, stored.metrics) == (S.failed, "the daemon stopped", {})
    assert await steps(store, run.id) == ["queued", "failed"]


async def test_of_two_racing_verdicts_one_is_written(redis_server: RedisServer) -> None:
    clients = [connect(redis_server.url) for _ in range(2)]
    stores = [Store(c, "t") for c in clients]
    run = await run_in(stores[0], S.running)
    outcomes = await asyncio.gather(
        stores[0].transition(run.model_copy(), S.passed),
        stores[1].transition(run.model_copy(), S.failed, error="killed"),
        return_exceptions=True,
    )
    assert sum(isinstance(o, TransitionRefused) for o in outcomes) == 1
    stored = await stores[0].run(run.id)
    assert stored is not None
    assert await steps(stores[0], run.id) == ["queued", stored.state.value]
    for c in clients:
        await c.aclose()


async def test_a_transition_and_its_event_are_one_transaction(
    store: Store, redis_server: RedisServer
) -> None:
    run = await run_in(store, S.running)
    watcher = connect(redis_server.url)
    async with watcher.monitor() as monitor:
        await store.transition(run, S.passed, detail={"efficacy": 1.0})
        await store.redis.echo("done")
        commands = []
        while (command := (await monitor.next_command())["command"]) != "ECHO done":
            commands.append(command.split(" ", 2)[:2])
    await watcher.aclose()
    names = [c[0].upper() for c in commands]
    multi, exec_ = names.index("MULTI"), names.index("EXEC")
    assert names[0] == "WATCH" and names[1] == "GET"  # the state it moves from is read watched
    inside = commands[multi + 1 : exec_]
    assert ["SET", f"t:run:{run.id}"] in [[c[0].upper(), c[1]] for c in inside]
    assert ["XADD", "t:events"] in [[c[0].upper(), c[1]] for c in inside]
    assert names[exec_ + 1 :] == []


async def test_a_killed_fact_set_is_retried_up_to_the_limit(store: Store, tmp_path: Path) -> None:
    consolidator = daemon(store, tmp_path)
    started: list[str] = []

    async def memory() -> tuple[bool, str]:
        return True, "fp"

    async def start(trigger: str) -> int:
        started.append(trigger)
        return 0

    consolidator._memory = memory  # type: ignore[method-assign]
    consolidator.start = start  # type: ignore[method-assign]
    for attempt in (1, 2, 3):
        run = await run_in(store, S.running)
        await store.set_last_attempt("fp")  # the child records what it selected
        await store.interrupt(run, "killed by SIGKILL", max_tries=3)
        started.clear()
        await consolidator.tick()
        if attempt < 3:
            assert run.error == (
                f"killed by SIGKILL (try {attempt} of 3); the next run resumes from its checkpoint"
            )
            assert started == ["idle"]
        else:
            assert run.error == LIMIT_REASON
            assert started == []  # not retried on its own
            assert await store.last_attempt() == "fp"
    stored = await store.run(run.id)
    assert stored is not None and stored.state == S.failed and stored.error == LIMIT_REASON
    assert (await store.events())[-1][1]["detail"] == json.dumps(
        {"error": LIMIT_REASON, "tries": 3}
    )

    # `memoryd consolidate` gives the fact set its tries back; a verdict ends them.
    fresh = await store.new_run("operator", "fp", fresh_tries=True)
    await store.transition(fresh, S.running)
    await store.interrupt(fresh, "killed by SIGKILL", max_tries=3)
    assert fresh.error is not None and "(try 1 of 3)" in fresh.error
    judged = await run_in(store, S.running)
    await store.transition(judged, S.rejected, reasons=["retention 0.50 below 0.90"])
    again = await run_in(store, S.running)
    await store.interrupt(again, "memoryd shut down during the run", max_tries=3)
    assert again.error is not None and "(try 1 of 3)" in again.error


async def test_recovery_promotes_a_passed_run_and_fails_abandoned_ones(
    store: Store, tmp_path: Path
) -> None:
    consolidator = daemon(store, tmp_path)
    adapters = consolidator.settings.adapters_dir
    passed = await run_in(store, S.passed, "a")
    write_adapter(adapters, passed.id)
    corrupt = await run_in(store, S.passed, "b")
    write_adapter(adapters, corrupt.id)
    (adapter_dir(adapters, corrupt.id) / "adapter_model.safetensors").write_bytes(b"truncated")
    abandoned = await run_in(store, S.running, "c")
    queued = await run_in(store, S.queued, "d")
    alive = await run_in(store, S.running, "e")
    assert await store.claim(alive.id, "elsewhere:1:ab", lease_s=30)

    assert await consolidator.recover()  # a live worker holds a run: none is started

    runs = {r.id: r for r in await store.runs()}
    assert runs[passed.id].state == S.promoted  # not trained again
    assert await store.active_version() == passed.id
    assert consolidator.swapper.active and consolidator.swapper.active.version == passed.id
    assert runs[corrupt.id].state == S.failed
    assert "promotion failed" in (runs[corrupt.id].error or "")
    assert "does not match its manifest" in (runs[corrupt.id].error or "")
    for run in (abandoned, queued):
        assert runs[run.id].state == S.failed
        assert "no worker holds it any more" in (runs[run.id].error or "")
        assert "(try 1 of 3)" in (runs[run.id].error or "")
    assert runs[alive.id].state == S.running  # its worker is alive: left to it
    assert [(r.id, claimed) for r, claimed in await store.open_runs()] == [(alive.id, True)]


async def test_two_claimants_one_wins_and_a_lapsed_lease_is_taken(store: Store) -> None:
    run = await run_in(store, S.queued)
    async with Claim(store, run.id, lease_s=0.3) as first:
        with pytest.raises(ClaimHeld, match=first.token):
            await Claim(store, run.id, lease_s=0.3).__aenter__()
        await asyncio.sleep(0.6)  # twice the lease: renewed meanwhile
        assert await store.claim_holder(run.id) == first.token
        assert not await store.claim(run.id, "second", lease_s=0.3)
    assert await store.claim_holder(run.id) is None  # released at the end

    assert await store.claim(run.id, "stalled", lease_s=0.2)  # never renewed
    assert not await store.claim(run.id, "second", lease_s=0.2)
    await asyncio.sleep(0.3)
    assert await store.claim(run.id, "second", lease_s=0.2)
    assert await store.claim_holder(run.id) == "second"


async def test_a_second_worker_on_a_claimed_run_does_nothing(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    run = await run_in(store, S.queued)
    assert await store.claim(run.id, "elsewhere:7:cd", lease_s=30)
    caplog.set_level(logging.WARNING, "memoryd.consolidator")
    assert await work(store, run.id, never) == EXIT_CLAIMED
    assert "is claimed by elsewhere:7:cd" in caplog.text
    stored = await store.run(run.id)
    assert stored is not None and stored.state == S.queued
    assert await store.claim_holder(run.id) == "elsewhere:7:cd"

    stale = await run_in(store, S.running)  # its worker died; the daemon will settle it
    assert await work(store, stale.id, never) == EXIT_CLAIMED
    assert f"consolidation {stale.id} is running; it may not go to running" in caplog.text


async def test_a_worker_claims_runs_and_records_its_run(store: Store) -> None:
    run = await run_in(store, S.queued)

    async def passes(claimed: Consolidation) -> int:
        assert await store.claim_holder(claimed.id) is not None
        await store.transition(claimed, S.passed)
        return EXIT_PASSED

    assert await work(store, run.id, passes) == EXIT_PASSED
    assert await steps(store, run.id) == ["queued", "running", "passed"]
    assert await store.claim_holder(run.id) is None

    broken = await run_in(store, S.queued)

    async def breaks(claimed: Consolidation) -> int:
        raise OSError("File too large")

    assert await work(store, broken.id, breaks) == EXIT_FAILED
    stored = await store.run(broken.id)
    assert stored is not None and stored.error == "OSError: File too large"
    assert stored.state == S.failed


async def never(run: Consolidation) -> int:
    raise AssertionError("a worker that does not hold the run did work on it")


def daemon(store: Store, state_dir: Path) -> Consolidator:
    """The daemon's consolidation side, its swapper without engines (nothing to load into)."""
    settings = Settings(state_dir=state_dir, consolidation=ConsolidationConfig(idle_after_s=0))
    swapper = Swapper([], store, settings.adapters_dir, settings.served_model_name)
    return Consolidator(
        settings, store, swapper, Activity(), Metrics(), "unix:///unused", "http://unused"
    )


def write_adapter(adapters: Path, version: int) -> None:
    """A complete adapter directory as a passed run leaves it (weights are any bytes here)."""
    directory = adapter_dir(adapters, version)
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text("{}")
    (directory / "adapter_model.safetensors").write_bytes(b"weights")
    manifest = AdapterManifest(
        version=version,
        name=adapter_name(version),
        base_model="base",
        created_at=now(),
        fact_ids=[],
        facts=[],
        examples={},
        training={},
        metrics={},
        files=file_hashes(directory),
    )
    (directory / MANIFEST).write_text(manifest.model_dump_json())
