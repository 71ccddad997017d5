"""Everything memoryd keeps in Redis, behind one typed interface.

Its keys are named in daemon.contract.Keys, with those of the
consolidation log (daemon.memory.lifecycle, daemon.memory.runlog).
A pinned fact (its hash's ``pinned`` field) and its passage never decay.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from daemon.config import RedisConfig
from daemon.memory.passages import PERSON_ROLES, THING_ROLES, Extracted
from daemon.memory.records import Fact, FactStatus, Passage, now
from daemon.memory.redact import MARKER
from daemon.memory.runlog import RunLog
from daemon.memory.segment import fact_id
from daemon.memory.statement import Statement, content_words, relation

log = logging.getLogger("memoryd.events")

VARIANTS_KEPT = 10
UNRESOLVED = PERSON_ROLES | THING_ROLES  # "the author ..." left unresolved names no one


def connect(url: str, cfg: RedisConfig | None = None) -> Redis:
    """The one way memoryd opens Redis: strings in and out, bounded waits.

    A command retries a dropped connection for well under a second, then fails:
    callers count what was not written rather than hang while Redis is down.
    Credentials and TLS files come from ``cfg`` (the URL may carry them too).
    """
    options: dict[str, Any] = {}
    if cfg and cfg.username:
        options["username"] = cfg.username
    if cfg and cfg.password:
        options["password"] = cfg.password
    if cfg and url.startswith("rediss://"):
        files = {
            "ssl_ca_certs": cfg.tls_ca_file,
            "ssl_certfile": cfg.tls_cert_file,
            "ssl_keyfile": cfg.tls_key_file,
        }
        options.update({k: v for k, v in files.items() if v})
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=3),
        **options,
    )


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


class Store(RunLog):
    def __init__(self, redis: Redis, prefix: str) -> None:
        """``redis`` must be created with ``decode_responses=True``."""
        super().__init__(redis, prefix)
        # Every fact's parsed text, to compare new statements with (loaded once;
        # this process is the only one that adds facts).
        self._statements: dict[str, Statement] | None = None

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # --- observations --------------------------------------------------------
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
        if not obs.passages:
            return
        known = [p for p in obs.passages if p.statements is None]
        pipe = self.redis.pipeline(transaction=False)
        for p in known:
            pipe.lrange(self.keys.passage(p.id, "facts"), 0, -1)
        known_facts = {
            p.id: [str(f) for f in fids]
            for p, fids in zip(known, await pipe.execute(), strict=True)
        }
        new_facts: dict[str, list[Resolved]] = {}
        replaced: list[tuple[str, str]] = []
        for p in obs.passages:
            if p.statements is not None:
                new_facts[p.id], pairs = await self._resolve(p.statements)
                replaced.extend(pairs)
        ts = now()
        pipe = self.redis.pipeline(transaction=True)
        for p in obs.passages:
            key = self.keys.passage(p.id)
            pipe.hsetnx(key, "text", p.text)
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

    async def active_ids(self, fids: list[str]) -> list[str]:
        """Those of ``fids`` still pending or consolidated."""
        if not fids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for fid in fids:
            pipe.hget(self.keys.fact(fid), "status")
        statuses = await pipe.execute()
        return [f for f, st in zip(fids, statuses, strict=True) if st and FactStatus(st).active]

    async def fact(self, fid: str) -> Fact | None:
        facts = await self.facts_by_id([fid])
        return facts[0] if facts else None

    async def facts_by_id(self, ids: Iterable[str]) -> list[Fact]:
        ids = list(ids)
        pipe = self.redis.pipeline(transaction=False)
        for fid in ids:
            pipe.hgetall(self.keys.fact(fid))
            pipe.pfcount(self.keys.fact(fid, "convs"))
            pipe.lrange(self.keys.fact(fid, "variants"), 0, -1)
        raw = await pipe.execute()
        out = []
        for i, fid in enumerate(ids):
            fields, convs, variants = raw[3 * i : 3 * i + 3]
            if not fields:
                continue
            f = {str(k): str(v) for k, v in fields.items()}
            out.append(
                Fact(
                    id=fid,
                    text=f["text"],
                    source=f.get("source"),
                    passage=f.get("passage"),
                    first_seen=float(f["first_seen"]),
                    last_seen=float(f["last_seen"]),
                    hits=int(f.get("hits", 0)),
                    redacted=int(f.get("redacted", 0)),
                    conversations=int(convs),
                    status=FactStatus(f.get("status", "pending")),
                    version=int(f["version"]) if f.get("version") else None,
                    variants=[str(v) for v in variants],
                    reason=f.get("reason"),
                    replaced_by=f.get("replaced_by"),
                    replaces=f.get("replaces"),
                    pinned=f.get("pinned") == "1",
                )
            )
        return out

    async def facts(self, limit: int = 1000, offset: int = 0) -> list[Fact]:
        ids = await self.redis.zrevrange(self.keys.facts, offset, offset + limit - 1)
        return await self.facts_by_id(str(i) for i in ids)

    async def count_facts(self) -> int:
        return int(await self.redis.zcard(self.keys.facts))

    # --- passages --------------------------------------------------------------
    async def passages_by_id(self, ids: Iterable[str]) -> list[Passage]:
        ids = list(ids)
        pipe = self.redis.pipeline(transaction=False)
        for pid in ids:
            pipe.hgetall(self.keys.passage(pid))
            pipe.pfcount(self.keys.passage(pid, "convs"))
            pipe.lrange(self.keys.passage(pid, "facts"), 0, -1)
            pipe.lrange(self.keys.passage(pid, "questions"), 0, -1)
        raw = await pipe.execute()
        out = []
        for i, pid in enumerate(ids):
            fields, convs, fact_ids, questions = raw[4 * i : 4 * i + 4]
            if not fields:
                continue
            f = {str(k): str(v) for k, v in fields.items()}
            out.append(
                Passage(
                    id=pid,
                    text=f["text"],
                    first_seen=float(f["first_seen"]),
                    last_seen=float(f["last_seen"]),
                    hits=int(f.get("hits", 0)),
                    redacted=int(f.get("redacted", 0)),
                    conversations=int(convs),
                    status=FactStatus(f.get("status", "pending")),
                    version=int(f["version"]) if f.get("version") else None,
                    reason=f.get("reason"),
                    fact_ids=list(dict.fromkeys(str(x) for x in fact_ids)),
                    questions=[str(q) for q in questions],
                )
            )
        return out

    async def passage(self, pid: str) -> Passage | None:
        found = await self.passages_by_id([pid])
        return found[0] if found else None

    async def passages(self, limit: int = 1000, offset: int = 0) -> list[Passage]:
        ids = await self.redis.zrevrange(self.keys.passages, offset, offset + limit - 1)
        return await self.passages_by_id(str(i) for i in ids)

    async def count_passages(self) -> int:
        return int(await self.redis.zcard(self.keys.passages))

    async def eligible(self, min_conversations: int) -> list[tuple[Passage, list[Fact]]]:
        """Passages that recurred enough to be consolidated, each with all its statements.

        A passage is left out when forgotten, or when none of its statements is
        still active (each was forgotten or replaced).
        """
        ids = await self.redis.zrange(self.keys.passages, 0, -1)
        passages = [
            p
            for p in await self.passages_by_id(str(i) for i in ids)
            if p.status.active and p.conversations >= min_conversations
        ]
        out = []
        for p in sorted(passages, key=lambda p: p.first_seen):
            facts = await self.facts_by_id(p.fact_ids)
            if any(f.status.active for f in facts):
                out.append((p, facts))
        return out

    async def set_passage_status(
        self,
        pids: Iterable[str],
        status: FactStatus,
        version: int | None = None,
        reason: str | None = None,
    ) -> None:
        await self._set_status(self.keys.passage, pids, status, version, reason)

    async def forget_passage(self, passage: Passage, reason: str) -> None:
        """The passage and every statement read in it leave every future adapter."""
        await self.set_passage_status([passage.id], FactStatus.forgotten, reason=reason)
        await self.set_status(
            await self.active_ids(passage.fact_ids), FactStatus.forgotten, reason=reason
        )

    async def set_status(
        self,
        fids: Iterable[str],
        status: FactStatus,
        version: int | None = None,
        reason: str | None = None,
    ) -> None:
        """``version``: the adapter it went into (kept as it was when None)."""
        await self._set_status(self.keys.fact, fids, status, version, reason)

    async def _set_status(
        self,
        key_of: Callable[[str], str],
        ids: Iterable[str],
        status: FactStatus,
        version: int | None,
        reason: str | None,
    ) -> None:
        """One write for the status of facts or passages, in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        for one in ids:
            key = key_of(one)
            pipe.hset(key, "status", status.value)
            if version is not None:
                pipe.hset(key, "version", version)
            if reason:
                pipe.hset(key, "reason", reason)
        await pipe.execute()

    async def forget_matching(self, text: str, reason: str) -> list[Fact]:
        """Forget every fact (not already forgotten) whose text contains ``text``, any case."""
        needle = text.casefold()
        ids = [str(i) for i in await self.redis.zrange(self.keys.facts, 0, -1)]
        matched = [
            f
            for f in await self.facts_by_id(ids)
            if needle in f.text.casefold() and f.status != FactStatus.forgotten
        ]
        await self.set_status([f.id for f in matched], FactStatus.forgotten, reason=reason)
        for f in matched:
            f.status, f.reason = FactStatus.forgotten, reason
        return matched

    async def set_pinned(self, fid: str, pinned: bool) -> None:
        """A pinned fact, and the passage it is read in, never decay (facts.ttl_days)."""
        await self.redis.hset(self.keys.fact(fid), "pinned", int(pinned))

    async def expire(self, last_seen_before: float, reason: str) -> list[str]:
        """Forget the active passages and facts not seen since ``last_seen_before``; the facts' ids.

        Pinned facts stay, and so do the passages they are read in.
        """
        old = [
            str(i)
            for i in await self.redis.zrangebyscore(self.keys.passages, "-inf", last_seen_before)
        ]
        ids = [
            str(i)
            for i in await self.redis.zrangebyscore(self.keys.facts, "-inf", last_seen_before)
        ]
        facts = await self.facts_by_id(await self.active_ids(ids))
        pinned = {f.id for f in facts if f.pinned}
        stale_passages = [
            p.id
            for p in await self.passages_by_id(old)
            if p.status.active and not pinned.intersection(p.fact_ids)
        ]
        await self.set_passage_status(stale_passages, FactStatus.forgotten, reason=reason)
        stale = [f.id for f in facts if not f.pinned]
        await self.set_status(stale, FactStatus.forgotten, reason=reason)
        return stale


def _push_capped(pipe: Pipeline, key: str, value: str, kept: int) -> None:
    """Most recent first, each value once, at most ``kept``."""
    pipe.lrem(key, 0, value)
    pipe.lpush(key, value)
    pipe.ltrim(key, 0, kept - 1)


def fingerprint(ids: Iterable[str]) -> str:
    """Names what a consolidation would learn (passage and fact ids), so it is not run twice."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
