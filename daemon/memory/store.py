"""Everything memoryd keeps in Redis, behind one typed interface.

Keys (all under the configured prefix ``P``):
  P:facts                     zset  fact id -> last seen
  P:fact:<id>                 hash  the Fact's scalar fields
  P:fact:<id>:convs           HyperLogLog of conversation keys (distinct conversations)
  P:fact:<id>:questions       list  capped sample of user questions asked next to it
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

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from daemon.memory.records import Consolidation, Fact, FactStatus, now

log = logging.getLogger("memoryd.events")

EVENTS_MAXLEN = 10_000


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


class Store:
    def __init__(self, redis: Redis, prefix: str) -> None:
        """``redis`` must be created with ``decode_responses=True``."""
        self.redis = redis
        self.p = prefix

    def _k(self, *parts: object) -> str:
        return ":".join([self.p, *(str(p) for p in parts)])

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # --- facts -------------------------------------------------------------
    async def record(self, obs: Observation, questions_kept: int) -> None:
        if not obs.facts:
            return
        ts = now()
        pipe = self.redis.pipeline(transaction=True)
        for fid, text in obs.facts:
            key = self._k("fact", fid)
            pipe.hsetnx(key, "text", text)
            pipe.hsetnx(key, "first_seen", ts)
            pipe.hsetnx(key, "status", FactStatus.pending.value)
            pipe.hset(key, "last_seen", ts)
            pipe.hincrby(key, "hits", 1)
            pipe.pfadd(self._k("fact", fid, "convs"), obs.conversation)
            pipe.zadd(self._k("facts"), {fid: ts})
            if obs.question and questions_kept:
                qkey = self._k("fact", fid, "questions")
                pipe.lrem(qkey, 0, obs.question)
                pipe.lpush(qkey, obs.question)
                pipe.ltrim(qkey, 0, questions_kept - 1)
        await pipe.execute()

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
        raw = await pipe.execute()
        out = []
        for i, fid in enumerate(ids):
            fields, convs, questions = raw[3 * i : 3 * i + 3]
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
                )
            )
        return out

    async def facts(self, limit: int = 1000, offset: int = 0) -> list[Fact]:
        ids = await self.redis.zrevrange(self._k("facts"), offset, offset + limit - 1)
        return await self.facts_by_id(str(i) for i in ids)

    async def count_facts(self) -> int:
        return int(await self.redis.zcard(self._k("facts")))

    async def eligible_facts(self, min_conversations: int) -> list[Fact]:
        """Facts that recurred enough to be consolidated (not forgotten)."""
        ids = await self.redis.zrange(self._k("facts"), 0, -1)
        facts = await self.facts_by_id(str(i) for i in ids)
        return sorted(
            (
                f
                for f in facts
                if f.status != FactStatus.forgotten and f.conversations >= min_conversations
            ),
            key=lambda f: f.first_seen,
        )

    async def set_status(
        self, fids: Iterable[str], status: FactStatus, version: int | None
    ) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for fid in fids:
            pipe.hset(self._k("fact", fid), "status", status.value)
            if version is None:
                pipe.hdel(self._k("fact", fid), "version")
            else:
                pipe.hset(self._k("fact", fid), "version", version)
        await pipe.execute()

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


def fingerprint(fact_ids: Iterable[str]) -> str:
    """Names a set of facts, so the same set is not consolidated twice."""
    return hashlib.sha256("\n".join(sorted(fact_ids)).encode()).hexdigest()[:16]
