"""Everything memoryd keeps in Redis, behind one typed interface.

Keys (all under the configured prefix ``P``):
  P:facts                     zset  fact id -> last seen
  P:fact:<id>                 hash  the Fact's scalar fields
  P:fact:<id>:convs           HyperLogLog of conversation keys (distinct conversations)
  P:fact:<id>:questions       list  capped sample of user questions asked next to it
  P:fact:<id>:variants        list  capped sample of other wordings merged into it
  P:aliases                   hash  id of a wording -> id of the fact it was merged into
  P:runs                      zset  run id -> started at
  P:run:<id>                  string  Consolidation JSON
  P:run:seq                   counter for run ids (= adapter versions)
  P:active                    string  active adapter version
  P:last_attempt              string  fingerprint of the fact set last consolidated
  P:events                    stream  consolidation log an operator can tail
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from typing import NamedTuple

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from daemon.memory.records import Consolidation, Fact, FactStatus, now
from daemon.memory.statement import Statement, relation, stems

log = logging.getLogger("memoryd.events")

EVENTS_MAXLEN = 10_000
VARIANTS_KEPT = 10


def connect(url: str) -> Redis:
    """The one way memoryd opens Redis: strings in and out, bounded waits.

    A command retries a dropped connection for well under a second, then fails:
    callers count what was not written rather than hang while Redis is down.
    """
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=3),
    )


class Observation:
    """One request's contribution: fact segments seen in one conversation."""

    def __init__(self, conversation: str, facts: list[tuple[str, str]], question: str | None):
        self.conversation = conversation
        self.facts = facts  # (fact id, text)
        self.question = question


class Resolved(NamedTuple):
    """Where an observed statement goes: its own fact or the one it restates."""

    fid: str
    text: str
    variant: bool


class Store:
    def __init__(self, redis: Redis, prefix: str) -> None:
        """``redis`` must be created with ``decode_responses=True``."""
        self.redis = redis
        self.p = prefix
        # Every fact's parsed text, to compare new statements with (loaded once;
        # this process is the only one that adds facts).
        self._statements: dict[str, Statement] | None = None

    def _k(self, *parts: object) -> str:
        return ":".join([self.p, *(str(p) for p in parts)])

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # --- facts -------------------------------------------------------------
    async def record(self, obs: Observation, questions_kept: int) -> None:
        """Count the observation on each fact; restatements count on the fact they restate.

        A new statement that contradicts an active fact about the same subject
        replaces it: the older one is marked replaced, both keep their records.
        """
        if not obs.facts:
            return
        resolved, replaced = await self._resolve(obs.facts)
        asked = stems(obs.question or "")  # a question is kept by the facts it is about
        ts = now()
        pipe = self.redis.pipeline(transaction=True)
        for r in resolved:
            key = self._k("fact", r.fid)
            pipe.hsetnx(key, "text", r.text)
            pipe.hsetnx(key, "first_seen", ts)
            pipe.hsetnx(key, "status", FactStatus.pending.value)
            pipe.hset(key, "last_seen", ts)
            pipe.hincrby(key, "hits", 1)
            pipe.pfadd(self._k("fact", r.fid, "convs"), obs.conversation)
            pipe.zadd(self._k("facts"), {r.fid: ts})
            if r.variant:
                _push_capped(pipe, self._k("fact", r.fid, "variants"), r.text, VARIANTS_KEPT)
            if obs.question and questions_kept and not asked.isdisjoint(stems(r.text)):
                _push_capped(
                    pipe, self._k("fact", r.fid, "questions"), obs.question, questions_kept
                )
        for old, new in replaced:
            reason = f"replaced by {new}: a newer statement about the same subject"
            pipe.hset(
                self._k("fact", old),
                mapping={"status": FactStatus.replaced.value, "replaced_by": new, "reason": reason},
            )
            pipe.hset(self._k("fact", new), "replaces", old)
        await pipe.execute()
        for old, new in replaced:
            log.info("fact %s replaced by %s", old, new)

    async def _resolve(
        self, facts: list[tuple[str, str]]
    ) -> tuple[list[Resolved], list[tuple[str, str]]]:
        """Each statement's fact id, and the (older, newer) pairs of contradicting facts."""
        ids = [fid for fid, _ in facts]
        pipe = self.redis.pipeline(transaction=False)
        for fid in ids:
            pipe.hget(self._k("fact", fid), "status")
        pipe.hmget(self._k("aliases"), ids)
        *statuses, aliases = await pipe.execute()
        known = await self._known()
        resolved: list[Resolved] = []
        replaced: list[tuple[str, str]] = []
        for (fid, text), status, alias in zip(facts, statuses, aliases, strict=True):
            if status is not None:
                resolved.append(Resolved(fid, text, variant=False))
                continue
            if alias is not None:
                resolved.append(Resolved(str(alias), text, variant=True))
                continue
            new = Statement.of(text)
            related = [(other, relation(new, st)) for other, st in known.items()]
            same = next((other for other, rel in related if rel == "same"), None)
            if same is not None:
                await self.redis.hset(self._k("aliases"), fid, same)
                resolved.append(Resolved(same, text, variant=True))
                continue
            contradicted = [other for other, rel in related if rel == "contradicts"]
            active = await self.active_ids(contradicted)
            replaced.extend((old, fid) for old in active)
            known[fid] = new
            resolved.append(Resolved(fid, text, variant=False))
        return resolved, replaced

    async def _known(self) -> dict[str, Statement]:
        if self._statements is None:
            ids = [str(i) for i in await self.redis.zrange(self._k("facts"), 0, -1)]
            pipe = self.redis.pipeline(transaction=False)
            for fid in ids:
                pipe.hget(self._k("fact", fid), "text")
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
            pipe.hget(self._k("fact", fid), "status")
        statuses = await pipe.execute()
        return [f for f, st in zip(fids, statuses, strict=True) if st and FactStatus(st).active]

    async def fact(self, fid: str) -> Fact | None:
        facts = await self.facts_by_id([fid])
        return facts[0] if facts else None

    async def facts_by_id(self, ids: Iterable[str]) -> list[Fact]:
        ids = list(ids)
        pipe = self.redis.pipeline(transaction=False)
        for fid in ids:
            pipe.hgetall(self._k("fact", fid))
            pipe.pfcount(self._k("fact", fid, "convs"))
            pipe.lrange(self._k("fact", fid, "questions"), 0, -1)
            pipe.lrange(self._k("fact", fid, "variants"), 0, -1)
        raw = await pipe.execute()
        out = []
        for i, fid in enumerate(ids):
            fields, convs, questions, variants = raw[4 * i : 4 * i + 4]
            if not fields:
                continue
            f = {str(k): str(v) for k, v in fields.items()}
            out.append(
                Fact(
                    id=fid,
                    text=f["text"],
                    first_seen=float(f["first_seen"]),
                    last_seen=float(f["last_seen"]),
                    hits=int(f.get("hits", 0)),
                    conversations=int(convs),
                    status=FactStatus(f.get("status", "pending")),
                    version=int(f["version"]) if f.get("version") else None,
                    questions=[str(q) for q in questions],
                    variants=[str(v) for v in variants],
                    reason=f.get("reason"),
                    replaced_by=f.get("replaced_by"),
                    replaces=f.get("replaces"),
                )
            )
        return out

    async def facts(self, limit: int = 1000, offset: int = 0) -> list[Fact]:
        ids = await self.redis.zrevrange(self._k("facts"), offset, offset + limit - 1)
        return await self.facts_by_id(str(i) for i in ids)

    async def count_facts(self) -> int:
        return int(await self.redis.zcard(self._k("facts")))

    async def eligible_facts(self, min_conversations: int) -> list[Fact]:
        """Facts that recurred enough to be consolidated (neither forgotten nor replaced)."""
        ids = await self.redis.zrange(self._k("facts"), 0, -1)
        facts = await self.facts_by_id(str(i) for i in ids)
        return sorted(
            (f for f in facts if f.status.active and f.conversations >= min_conversations),
            key=lambda f: f.first_seen,
        )

    async def set_status(
        self,
        fids: Iterable[str],
        status: FactStatus,
        version: int | None = None,
        reason: str | None = None,
    ) -> None:
        """``version``: the adapter it went into (kept as it was when None)."""
        pipe = self.redis.pipeline(transaction=True)
        for fid in fids:
            key = self._k("fact", fid)
            pipe.hset(key, "status", status.value)
            if version is not None:
                pipe.hset(key, "version", version)
            if reason:
                pipe.hset(key, "reason", reason)
        await pipe.execute()

    async def forget_matching(self, text: str, reason: str) -> list[Fact]:
        """Forget every fact (not already forgotten) whose text contains ``text``, any case."""
        needle = text.casefold()
        ids = [str(i) for i in await self.redis.zrange(self._k("facts"), 0, -1)]
        matched = [
            f
            for f in await self.facts_by_id(ids)
            if needle in f.text.casefold() and f.status != FactStatus.forgotten
        ]
        await self.set_status([f.id for f in matched], FactStatus.forgotten, reason=reason)
        for f in matched:
            f.status, f.reason = FactStatus.forgotten, reason
        return matched

    async def expire(self, last_seen_before: float, reason: str) -> list[str]:
        """Forget the active facts not seen since ``last_seen_before``; their ids."""
        ids = [
            str(i)
            for i in await self.redis.zrangebyscore(self._k("facts"), "-inf", last_seen_before)
        ]
        stale = await self.active_ids(ids)
        await self.set_status(stale, FactStatus.forgotten, reason=reason)
        return stale

    # --- consolidation runs --------------------------------------------------
    async def new_run(self, trigger: str) -> Consolidation:
        run = Consolidation(id=int(await self.redis.incr(self._k("run", "seq"))), trigger=trigger)
        await self.save_run(run)
        await self.redis.zadd(self._k("runs"), {str(run.id): run.started_at})
        await self.event(run.id, "started", trigger=trigger)
        return run

    async def save_run(self, run: Consolidation) -> None:
        await self.redis.set(self._k("run", run.id), run.model_dump_json())

    async def run(self, run_id: int) -> Consolidation | None:
        raw = await self.redis.get(self._k("run", run_id))
        return Consolidation.model_validate_json(raw) if raw else None

    async def runs(self, limit: int = 50) -> list[Consolidation]:
        ids = await self.redis.zrevrange(self._k("runs"), 0, limit - 1)
        raws = await self.redis.mget([self._k("run", i) for i in ids]) if ids else []
        return [Consolidation.model_validate_json(r) for r in raws if r]

    async def event(self, run_id: int, step: str, **detail: object) -> None:
        fields: dict[
            str | bytes | int | float | memoryview | bytearray,
            str | bytes | int | float | memoryview | bytearray,
        ] = {
            "run": run_id,
            "step": step,
            "at": f"{now():.3f}",
            "detail": json.dumps(detail, default=str),
        }
        await self.redis.xadd(self._k("events"), fields, maxlen=EVENTS_MAXLEN, approximate=True)
        log.info(
            "consolidation %s: %s %s",
            run_id,
            step,
            fields["detail"],
            extra={"event": {"run": run_id, "step": step, **detail}},
        )

    async def events(
        self, last_id: str = "0", count: int = 100
    ) -> list[tuple[str, dict[str, str]]]:
        raw = await self.redis.xrange(
            self._k("events"), min=f"({last_id}" if last_id != "0" else "-", count=count
        )
        return [(str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in raw or []]

    # --- active adapter ------------------------------------------------------
    async def active_version(self) -> int | None:
        raw = await self.redis.get(self._k("active"))
        return int(raw) if raw else None

    async def set_active_version(self, version: int | None) -> None:
        if version is None:
            await self.redis.delete(self._k("active"))
        else:
            await self.redis.set(self._k("active"), version)

    async def last_attempt(self) -> str | None:
        raw = await self.redis.get(self._k("last_attempt"))
        return str(raw) if raw else None

    async def set_last_attempt(self, fingerprint: str) -> None:
        await self.redis.set(self._k("last_attempt"), fingerprint)

    async def clear_last_attempt(self) -> None:
        await self.redis.delete(self._k("last_attempt"))


def _push_capped(pipe: Pipeline, key: str, value: str, kept: int) -> None:
    """Most recent first, each value once, at most ``kept``."""
    pipe.lrem(key, 0, value)
    pipe.lpush(key, value)
    pipe.ltrim(key, 0, kept - 1)


def fingerprint(fact_ids: Iterable[str]) -> str:
    """Names a set of facts, so the same set is not consolidated twice."""
    return hashlib.sha256("\n".join(sorted(fact_ids)).encode()).hexdigest()[:16]
