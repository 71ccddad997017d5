"""The Redis store against a real redis-server: counting, lifecycle, runs."""

from __future__ import annotations

import time

from redis import Redis as SyncRedis

from daemon.config import ObserverConfig
from daemon.memory.language import Language
from daemon.memory.observer import observe
from daemon.memory.records import FactStatus, RunState
from daemon.memory.segment import fact_id
from daemon.memory.store import Store, connect, fingerprint
from tests.conftest import RedisServer
from tests.harness import redis_bytes

LANG = Language()


async def seen(store: Store, conversation: str, context: str, question: str = "Hi!") -> None:
    """One request carrying ``context`` as its system prompt, read as the observer reads it."""
    messages = [{"role": "system", "content": context}, {"role": "user", "content": question}]
    obs = await observe(store, LANG, messages, conversation, ObserverConfig(min_chars=10))
    await store.record(obs, questions_kept=3)


async def eligible(store: Store, min_conversations: int) -> list[str]:
    """The active statements a consolidation would learn, passage by passage."""
    return [
        f.text
        for _, facts in await store.eligible(min_conversations)
        for f in facts
        if f.status.active
    ]


async def test_conversations_count_once_and_questions_are_capped(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    text = "The depot closes at noon on Sundays."
    for i in range(5):
        await seen(store, "conv-a", text, f"When does the depot close, {i}?")
    await seen(store, "conv-b", text)
    passage = await store.passage(fact_id(text))
    got = await store.fact(fact_id(text))
    assert passage is not None and got is not None
    assert passage.conversations == 2 and passage.hits == 6
    assert got.conversations == 2 and got.hits == 6 and got.passage == passage.id
    # The latest three questions asked with the passage in context.
    assert passage.questions == ["Hi!", *(f"When does the depot close, {i}?" for i in (4, 3))]
    assert got.status == FactStatus.pending
    assert await eligible(store, 2) == [text]
    assert await eligible(store, 3) == []

    await store.forget_passage(passage, "operator")
    await seen(store, "conv-c", text)
    assert (await store.fact(got.id)).status == FactStatus.forgotten  # type: ignore[union-attr]
    assert await eligible(store, 1) == []
    await redis.aclose()


async def test_a_passage_keeps_its_statements_resolved(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    bio = (
        "Ilse Varga-Moreau is a Hungarian cartographer. She was born in 1958 in Kestrel Point. "
        "Her father, Anton Varga, built fishing boats. He retired in 1990.\n\n"
        "The cartographer drew the first survey of the Ormond Reefs in 1984."
    )
    for i in range(3):
        await seen(store, f"c{i}", bio)
    [(passage, facts)] = await store.eligible(3)
    assert passage.text == bio
    assert [f.text for f in facts] == [
        "Ilse Varga-Moreau is a Hungarian cartographer.",
        "Ilse Varga-Moreau was born in 1958 in Kestrel Point.",
        "Ilse Varga-Moreau's father, Anton Varga, built fishing boats.",
        "Anton Varga retired in 1990.",
        "Ilse Varga-Moreau drew the first survey of the Ormond Reefs in 1984.",
    ]
    assert facts[1].source == "She was born in 1958 in Kestrel Point."
    await redis.aclose()


async def test_unresolved_descriptions_of_different_people_do_not_contradict(
    redis_server: RedisServer,
) -> None:
    """Two passages' "The author's full name is ..." are about two people, not one changing."""
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    await seen(store, "a", "The author's full name is Petra Lind.")
    await seen(store, "b", "The author's full name is Omar Haddad.")
    assert sorted(await eligible(store, 1)) == [
        "The author's full name is Omar Haddad.",
        "The author's full name is Petra Lind.",
    ]
    await redis.aclose()


async def test_runs_and_active_version(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    first = await store.new_run("operator", fingerprint(["a"]))
    second = await store.new_run("idle", fingerprint(["b"]))
    assert (first.id, second.id) == (1, 2)
    await store.transition(second, RunState.running)
    await store.transition(second, RunState.rejected, reasons=["retention 0.50 below 0.90"])
    runs = await store.runs()
    assert [r.id for r in runs] == [2, 1]
    assert runs[0].reasons == ["retention 0.50 below 0.90"]
    events = await store.events()
    assert [e["step"] for _, e in events] == ["queued", "queued", "running", "rejected"]
    assert await store.active_version() is None
    await store.set_active_version(2)
    assert await store.active_version() == 2
    assert fingerprint(["a", "b"]) == fingerprint(["b", "a"]) != fingerprint(["a"])
    await redis.aclose()


async def test_rewordings_count_on_one_fact(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    wordings = [
        "The harbour master of Port Elsmere is Ines Marlowe.",
        "the harbour master of Port Elsmere is Ines Marlowe",
        "The harbour master of the port of Port Elsmere was Ines Marlowe!",
    ]
    for i, text in enumerate(wordings):
        await seen(store, f"conv-{i}", text)
    other = "The ferry to Port Elsmere leaves from pier eleven."
    await seen(store, "conv-x", other)
    # Seen again later, a merged wording goes straight to its fact.
    await seen(store, "conv-3", wordings[2])

    facts = {f.text: f for f in await store.facts()}
    assert set(facts) == {wordings[0], other}
    merged = facts[wordings[0]]
    assert merged.conversations == 4 and merged.hits == 4
    assert merged.variants == [wordings[2]]  # wordings[1] has the same id (case, punctuation)
    # Recurrence is counted per passage (the first two wordings are one passage by their id,
    # the third is seen in two conversations); every passage names the one merged fact.
    assert await eligible(store, 2) == [wordings[0], wordings[0]]
    assert await eligible(store, 1) == [wordings[0], wordings[0], other]
    await redis.aclose()


async def test_a_newer_contradicting_statement_replaces_the_older(
    redis_server: RedisServer,
) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    old = "The capital of Zorvath is Quillmere."
    new = "The capital of Zorvath is Brightwater."
    for i in range(3):
        await seen(store, f"old-{i}", old)
    assert await eligible(store, 3) == [old]
    for i in range(3):
        await seen(store, f"new-{i}", new)

    before, after = await store.fact(fact_id(old)), await store.fact(fact_id(new))
    assert before is not None and after is not None
    assert before.status == FactStatus.replaced and before.replaced_by == after.id
    assert after.status == FactStatus.pending and after.replaces == before.id
    assert before.reason and "newer statement" in before.reason
    assert await eligible(store, 3) == [new]
    # Restating the old value later does not bring it back.
    await seen(store, "old-again", old)
    assert (await store.fact(fact_id(old))).status == FactStatus.replaced  # type: ignore[union-attr]
    await redis.aclose()


async def test_facts_not_seen_for_the_ttl_expire(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    stale, fresh = "The old depot closed in 1998.", "The new depot opened in 2024."
    await seen(store, "a", stale)
    cutoff = time.time()
    await seen(store, "b", fresh)
    await store.set_status([fact_id(fresh)], FactStatus.consolidated, 1)

    assert await store.expire(cutoff, "not seen for 30 days") == [fact_id(stale)]
    expired = await store.fact(fact_id(stale))
    assert expired is not None and expired.status == FactStatus.forgotten
    assert expired.reason == "not seen for 30 days"
    assert await eligible(store, 1) == [fresh]
    assert await store.expire(cutoff, "again") == []  # already forgotten: left as it is
    await redis.aclose()


async def test_a_pinned_fact_never_expires(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    kept, stale = "The archive opens at nine.", "The kiosk closed in 2001."
    await seen(store, "a", kept)
    await seen(store, "b", stale)
    await store.set_pinned(fact_id(kept), True)
    assert await store.expire(time.time(), "not seen for 30 days") == [fact_id(stale)]
    pinned = await store.fact(fact_id(kept))
    assert pinned is not None and pinned.pinned and pinned.status == FactStatus.pending
    assert await eligible(store, 1) == [kept]  # its passage stayed too
    await store.set_pinned(fact_id(kept), False)
    assert await store.expire(time.time(), "not seen") == [fact_id(kept)]
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
        await seen(store, "c", t)
    forgotten = await store.forget_matching("port ELSMERE", "operator")
    assert sorted(f.text for f in forgotten) == sorted(texts[:2])
    assert all(f.status == FactStatus.forgotten for f in forgotten)
    assert await eligible(store, 1) == [texts[2]]
    # What a promotion marks consolidated: only the facts not forgotten meanwhile.
    assert await store.active_ids([fact_id(t) for t in texts]) == [fact_id(texts[2])]
    assert await store.forget_matching("port elsmere", "operator") == []
    await redis.aclose()


async def test_forgetting_leaves_no_word_in_redis(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    store = Store(redis, "t")
    doc = (
        "The Ferrow Institute repairs tide clocks. Its workshop is in Brackenholt.\n\n"
        "The institute was founded by Maren Oakes in 1911."
    )
    other = "The Quillan ferry leaves Brackenholt at dawn."
    for i in range(3):
        await seen(store, f"c{i}", doc, "Where is the Ferrow Institute's workshop?")
    await seen(store, "c9", other)
    [(passage, facts)] = await store.eligible(3)
    founded = next(f for f in facts if "1911" in f.text)
    # A run rejected over the passage quotes it; the log repeats it.
    run = await store.new_run("idle", "f")
    run.passage_ids = [passage.id]
    await store.transition(run, RunState.running)
    reason = f"passage {passage.id} ({facts[0].text[:60]}): held-out 0.10 below the base 0.20"
    await store.transition(run, RunState.rejected, reasons=[reason])

    await store.forget_facts([founded], "operator")
    dump = await everything(store)
    assert "Maren Oakes" not in dump and "1911" not in dump
    assert "Brackenholt" in dump  # the rest of the passage stays
    assert (await store.fact(founded.id)).status == FactStatus.forgotten  # type: ignore[union-attr]

    await store.forget_passage(passage, "operator")
    dump = await everything(store)
    assert "Ferrow" not in dump and "tide clocks" not in dump and "workshop" not in dump
    assert "Quillan ferry" in dump
    rejected = await store.run(run.id)
    assert rejected is not None and rejected.state == RunState.rejected
    assert rejected.reasons == [
        f"passage {passage.id} ([forgotten]): held-out 0.10 below the base 0.20"
    ]
    # Said again, in a conversation of its own or inside a longer document: not stored again.
    await seen(store, "c4", doc, "Who founded the Ferrow Institute?")
    await seen(store, "c5", doc + "\n\nIt also mends barometers.")
    dump = await everything(store)
    assert "Ferrow" not in dump and "Maren Oakes" not in dump
    assert "barometers" in dump
    await redis.aclose()


async def everything(store: Store) -> str:
    """Every key and value Redis holds, as text."""
    raw = redis_bytes(
        SyncRedis(unix_socket_path=store.redis.connection_pool.connection_kwargs["path"])
    )
    return raw.decode(errors="replace")
