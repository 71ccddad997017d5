"""Writing what the observer saw: passages counted per conversation, statements as facts.

A new passage's statements are compared with the facts already known, so a
restatement counts on the fact it restates and a contradiction about the same
resolved subject replaces the older fact. Its keys are named in
daemon.contract.Keys; daemon.memory.store reads what is written here.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from daemon.memory.passages import PERSON_ROLES, THING_ROLES, Extracted
from daemon.memory.records import FactStatus, now
from daemon.memory.redact import MARKER
from daemon.memory.runlog import RunLog
from daemon.memory.segment import fact_id
from daemon.memory.statement import Statement, content_words, relation

log = logging.getLogger("memoryd.events")

VARIANTS_KEPT = 10
UNRESOLVED = PERSON_ROLES | THING_ROLES  # "the author ..." left unresolved names no one


class ObservedPassage(NamedTuple):
    id: str
    text: str
    statements: list[Extracted] | None  # None: a passage already known, only counted


class Observation:
    """One request's contribution: the passages of its context, seen in one conversation."""

    def __init__(
        self,
        conversation: str,
        passages: list[ObservedPassage],
        question: str | None,
        redacted: Counter[str] | None = None,
        dropped: int = 0,
    ) -> None:
        self.conversation = conversation
        self.passages = passages
        self.question = question
        self.redacted = redacted or Counter()  # by kind, in the whole request
        self.dropped = dropped  # statements not learned: their point was a redacted value


class Resolved(NamedTuple):
    """Where an observed statement goes: its own fact or the one it restates."""

    fid: str
    text: str
    source: str
    variant: bool


class Recording(RunLog):
    def __init__(self, redis: Redis, prefix: str) -> None:
        """``redis`` must be created with ``decode_responses=True``."""
        super().__init__(redis, prefix)
        # Every fact's parsed text, to compare new statements with (loaded once;
        # this process is the only one that adds facts).
        self._statements: dict[str, Statement] | None = None

    async def known_passages(self, ids: list[str]) -> set[str]:
        pipe = self.redis.pipeline(transaction=False)
        for pid in ids:
            pipe.exists(self.keys.passage(pid))
        return {pid for pid, found in zip(ids, await pipe.execute(), strict=True) if found}

    async def record(self, obs: Observation, questions_kept: int) -> None:
        """Count the observation on each passage and its statements.

        A new passage's statements are compared with the known facts: a
        restatement counts on the fact it restates; one that contradicts an
        active fact about the same resolved subject replaces it (the older one
        is marked replaced, both keep their records).
        """
        forgotten = await self._forgotten(self.keys.passage, [p.id for p in obs.passages])
        observed = [p for p in obs.passages if p.id not in forgotten]
        if not observed:
            return
        known = [p for p in observed if p.statements is None]
        pipe = self.redis.pipeline(transaction=False)
        for p in known:
            pipe.lrange(self.keys.passage(p.id, "facts"), 0, -1)
        known_facts = {
            p.id: [str(f) for f in fids]
            for p, fids in zip(known, await pipe.execute(), strict=True)
        }
        new_facts: dict[str, list[Resolved]] = {}
        replaced: list[tuple[str, str]] = []
        texts: dict[str, str] = {}
        for p in observed:
            if p.statements is not None:
                resolved, pairs = await self._resolve(p.statements)
                gone = await self._forgotten(self.keys.fact, [r.fid for r in resolved])
                new_facts[p.id] = [r for r in resolved if r.fid not in gone]
                replaced.extend(pairs)
                # A forgotten statement restated in a new passage is not stored again.
                for r in resolved:
                    if r.fid in gone:
                        texts[p.id] = texts.get(p.id, p.text).replace(r.source, "")
        ts = now()
        pipe = self.redis.pipeline(transaction=True)
        for p in observed:
            key = self.keys.passage(p.id)
            pipe.hsetnx(key, "text", texts.get(p.id, p.text))
            pipe.hsetnx(key, "first_seen", ts)
            pipe.hsetnx(key, "status", FactStatus.pending.value)
            pipe.hsetnx(key, "redacted", p.text.count(MARKER))
            pipe.hset(key, "last_seen", ts)
            pipe.hincrby(key, "hits", 1)
            pipe.pfadd(self.keys.passage(p.id, "convs"), obs.conversation)
            pipe.zadd(self.keys.passages, {p.id: ts})
            if obs.question and questions_kept:
                _push_capped(
                    pipe, self.keys.passage(p.id, "questions"), obs.question, questions_kept
                )
            for fid in known_facts.get(p.id, []):
                self._count_fact(pipe, fid, obs.conversation, ts)
            for r in new_facts.get(p.id, []):
                fkey = self.keys.fact(r.fid)
                pipe.hsetnx(fkey, "text", r.text)
                pipe.hsetnx(fkey, "source", r.source)
                pipe.hsetnx(fkey, "passage", p.id)
                pipe.hsetnx(fkey, "first_seen", ts)
                pipe.hsetnx(fkey, "status", FactStatus.pending.value)
                self._count_fact(pipe, r.fid, obs.conversation, ts)
                pipe.rpush(self.keys.passage(p.id, "facts"), r.fid)
                if r.variant:
                    _push_capped(pipe, self.keys.fact(r.fid, "variants"), r.text, VARIANTS_KEPT)
        for old, new in replaced:
            reason = f"replaced by {new}: a newer statement about the same subject"
            pipe.hset(
                self.keys.fact(old),
                mapping={"status": FactStatus.replaced.value, "replaced_by": new, "reason": reason},
            )
            pipe.hset(self.keys.fact(new), "replaces", old)
        await pipe.execute()
        for old, new in replaced:
            log.info("fact %s replaced by %s", old, new)

    def _count_fact(self, pipe: Pipeline, fid: str, conversation: str, ts: float) -> None:
        key = self.keys.fact(fid)
        pipe.hset(key, "last_seen", ts)
        pipe.hincrby(key, "hits", 1)
        pipe.pfadd(self.keys.fact(fid, "convs"), conversation)
        pipe.zadd(self.keys.facts, {fid: ts})

    async def _resolve(
        self, statements: list[Extracted]
    ) -> tuple[list[Resolved], list[tuple[str, str]]]:
        """Each statement's fact id, and the (older, newer) pairs of contradicting facts."""
        ids = [fact_id(e.text) for e in statements]
        pipe = self.redis.pipeline(transaction=False)
        for fid in ids:
            pipe.hget(self.keys.fact(fid), "status")
        pipe.hmget(self.keys.aliases, ids)
        *statuses, aliases = await pipe.execute()
        known = await self._known()
        resolved: list[Resolved] = []
        replaced: list[tuple[str, str]] = []
        for fid, e, status, alias in zip(ids, statements, statuses, aliases, strict=True):
            if status is not None or fid in {r.fid for r in resolved}:
                resolved.append(Resolved(fid, e.text, e.source, variant=False))
                continue
            if alias is not None:
                resolved.append(Resolved(str(alias), e.text, e.source, variant=True))
                continue
            new = Statement.of(e.text)
            related = [(other, relation(new, st)) for other, st in known.items()]
            same = next((other for other, rel in related if rel == "same"), None)
            if same is not None:
                await self.redis.hset(self.keys.aliases, fid, same)
                resolved.append(Resolved(same, e.text, e.source, variant=True))
                continue
            if (
                not {w.removesuffix("'s").removesuffix("’s") for w in content_words(e.subject)}
                & UNRESOLVED
            ):
                contradicted = [other for other, rel in related if rel == "contradicts"]
                active = await self.active_ids(contradicted)
                replaced.extend((old, fid) for old in active)
            known[fid] = new
            resolved.append(Resolved(fid, e.text, e.source, variant=False))
        return resolved, replaced

    async def _forgotten(self, key_of: Callable[[str], str], ids: list[str]) -> set[str]:
        """Those of ``ids`` (passages or facts, by ``key_of``) forgotten: never written again."""
        pipe = self.redis.pipeline(transaction=False)
        for one in ids:
            pipe.hget(key_of(one), "status")
        statuses = await pipe.execute() if ids else []
        return {i for i, st in zip(ids, statuses, strict=True) if st == FactStatus.forgotten.value}

    def unlearn(self, fids: set[str]) -> None:
        """Forgotten facts are no longer compared with new statements."""
        if self._statements is not None:
            for fid in fids:
                self._statements.pop(fid, None)

    async def active_ids(self, fids: list[str]) -> list[str]:
        """Those of ``fids`` still pending or consolidated."""
        if not fids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for fid in fids:
            pipe.hget(self.keys.fact(fid), "status")
        statuses = await pipe.execute()
        return [f for f, st in zip(fids, statuses, strict=True) if st and FactStatus(st).active]

    async def _known(self) -> dict[str, Statement]:
        if self._statements is None:
            ids = [str(i) for i in await self.redis.zrange(self.keys.facts, 0, -1)]
            pipe = self.redis.pipeline(transaction=False)
            for fid in ids:
                pipe.hget(self.keys.fact(fid), "text")
            texts = await pipe.execute()
            self._statements = {
                fid: Statement.of(str(t)) for fid, t in zip(ids, texts, strict=True) if t
            }
        return self._statements


def _push_capped(pipe: Pipeline, key: str, value: str, kept: int) -> None:
    """Most recent first, each value once, at most ``kept``."""
    pipe.lrem(key, 0, value)
    pipe.lpush(key, value)
    pipe.ltrim(key, 0, kept - 1)
