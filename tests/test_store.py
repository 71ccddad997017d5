"""The Redis store against a real redis-server: counting, lifecycle, runs."""

from __future__ import annotations

import time

from daemon.memory.records import FactStatus, RunState
from daemon.memory.segment import fact_id
from daemon.memory.store import Observation, Store, connect, fingerprint
from tests.conftest import RedisServer


async def test_conversations_count_once_and_questions_are_capped(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    fact = ("f1", "The depot closes at noon on Sundays.")
    for i in range(5):
        question = f"When does the depot close, {i}?"
        await store.record(Observation("conv-a", [fact], question), questions_kept=3)
    await store.record(Observation("conv-a", [fact], "Hi! Can you help me?"), questions_kept=3)
    await store.record(Observation("conv-b", [fact], None), questions_kept=3)
    got = await store.fact("f1")
    assert got is not None
    assert got.conversations == 2 and got.hits == 7
    # The latest three questions about the fact; the greeting names nothing in it.
    assert got.questions == [f"When does the depot close, {i}?" for i in (4, 3, 2)]
    assert got.status == FactStatus.pending
    assert [f.id for f in await store.eligible_facts(2)] == ["f1"]
    assert await store.eligible_facts(3) == []

    await store.set_status(["f1"], FactStatus.forgotten)
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


def observed(text: str) -> tuple[str, str]:
    return fact_id(text), text


async def test_rewordings_count_on_one_fact(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    wordings = [
        "The harbour master of Port Elsmere is Ines Marlowe.",
        "the harbour master of Port Elsmere is Ines Marlowe",
        "The harbour master of the port of Port Elsmere was Ines Marlowe!",
    ]
    for i, text in enumerate(wordings):
        await store.record(Observation(f"conv-{i}", [observed(text)], None), questions_kept=3)
    other = "The ferry to Port Elsmere leaves from pier eleven."
    await store.record(Observation("conv-x", [observed(other)], None), questions_kept=3)
    # Seen again later, a merged wording goes straight to its fact.
    await store.record(Observation("conv-3", [observed(wordings[2])], None), questions_kept=3)

    facts = {f.text: f for f in await store.facts()}
    assert set(facts) == {wordings[0], other}
    merged = facts[wordings[0]]
    assert merged.conversations == 4 and merged.hits == 4
    assert merged.variants == [wordings[2]]  # wordings[1] has the same id (case, punctuation)
    assert [f.text for f in await store.eligible_facts(3)] == [wordings[0]]
    await redis.aclose()


async def test_a_newer_contradicting_statement_replaces_the_older(
    redis_server: RedisServer,
) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    old = "The capital of Zorvath is Quillmere."
    new = "The capital of Zorvath is Brightwater."
    for i in range(3):
        await store.record(Observation(f"old-{i}", [observed(old)], None), questions_kept=3)
    assert [f.text for f in await store.eligible_facts(3)] == [old]
    for i in range(3):
        await store.record(Observation(f"new-{i}", [observed(new)], None), questions_kept=3)

    before, after = await store.fact(fact_id(old)), await store.fact(fact_id(new))
    assert before is not None and after is not None
    assert before.status == FactStatus.replaced and before.replaced_by == after.id
    assert after.status == FactStatus.pending and after.replaces == before.id
    assert before.reason and "newer statement" in before.reason
    assert [f.text for f in await store.eligible_facts(3)] == [new]
    # Restating the old value later does not bring it back.
    await store.record(Observation("old-again", [observed(old)], None), questions_kept=3)
    assert (await store.fact(fact_id(old))).status == FactStatus.replaced  # type: ignore[union-attr]
    await redis.aclose()


async def test_facts_not_seen_for_the_ttl_expire(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    stale, fresh = (
        observed("The old depot closed in 1998."),
        observed("The new depot opened in 2024."),
    )
    await store.record(Observation("a", [stale], None), questions_kept=3)
    cutoff = time.time()
    await store.record(Observation("b", [fresh], None), questions_kept=3)
    await store.set_status([fresh[0]], FactStatus.consolidated, 1)

    assert await store.expire(cutoff, "not seen for 30 days") == [stale[0]]
    expired = await store.fact(stale[0])
    assert expired is not None and expired.status == FactStatus.forgotten
    assert expired.reason == "not seen for 30 days"
    assert [f.id for f in await store.eligible_facts(1)] == [fresh[0]]
    assert await store.expire(cutoff, "again") == []  # already forgotten: left as it is
    await redis.aclose()


async def test_forget_matching_text(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    texts = [
        "The harbour master of Port Elsmere is Ines Marlowe.",
        "The lighthouse of Port Elsmere is painted red.",
        "The capital of Zorvath is Quillmere.",
    ]
    for t in texts:
        await store.record(Observation("c", [observed(t)], None), questions_kept=3)
    forgotten = await store.forget_matching("port ELSMERE", "operator")
    assert sorted(f.text for f in forgotten) == sorted(texts[:2])
    assert all(f.status == FactStatus.forgotten for f in forgotten)
    assert [f.text for f in await store.eligible_facts(1)] == [texts[2]]
    # What a promotion marks consolidated: only the facts not forgotten meanwhile.
    assert await store.active_ids([fact_id(t) for t in texts]) == [fact_id(texts[2])]
    assert await store.forget_matching("port elsmere", "operator") == []
    await redis.aclose()
