"""The Redis store against a real redis-server: counting, lifecycle, runs."""

from __future__ import annotations

from daemon.memory.records import FactStatus, RunState
from daemon.memory.store import Observation, Store, connect, fingerprint
from tests.conftest import RedisServer


async def test_conversations_count_once_and_questions_are_capped(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    fact = ("f1", "The depot closes at noon on Sundays.")
    for i in range(5):
        await store.record(Observation("conv-a", [fact], f"question {i}?"), questions_kept=3)
    await store.record(Observation("conv-b", [fact], None), questions_kept=3)
    got = await store.fact("f1")
    assert got is not None
    assert got.conversations == 2 and got.hits == 6
    assert got.questions == ["question 4?", "question 3?", "question 2?"]
    assert got.status == FactStatus.pending
    assert [f.id for f in await store.eligible_facts(2)] == ["f1"]
    assert await store.eligible_facts(3) == []

    await store.set_status(["f1"], FactStatus.forgotten, None)
    await store.record(Observation("conv-c", [fact], None), questions_kept=3)
    assert (await store.fact("f1")).status == FactStatus.forgotten  # type: ignore[union-attr]
    assert await store.eligible_facts(1) == []
    await redis.aclose()


async def test_runs_and_active_version(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    first = await store.new_run("operator")
    second = await store.new_run("idle")
    assert (first.id, second.id) == (1, 2)
    second.state = RunState.rejected
    second.reasons = ["retention 0.50 below 0.90"]
    await store.save_run(second)
    runs = await store.runs()
    assert [r.id for r in runs] == [2, 1]
    assert runs[0].reasons == ["retention 0.50 below 0.90"]
    events = await store.events()
    assert [e["step"] for _, e in events] == ["started", "started"]
    assert await store.active_version() is None
    await store.set_active_version(2)
    assert await store.active_version() == 2
    assert fingerprint(["a", "b"]) == fingerprint(["b", "a"]) != fingerprint(["a"])
    await redis.aclose()
