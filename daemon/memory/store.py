"""Everything memoryd keeps in Redis, behind one typed interface.

Its keys are named in daemon.contract.Keys. The layers: the run lifecycle
(daemon.memory.lifecycle) under the consolidation log (daemon.memory.runlog)
under what the observer writes (daemon.memory.recording); here, reading memory
back and changing its status. A pinned fact (its hash's ``pinned`` field) and
its passage never decay.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from daemon.config import RedisConfig
from daemon.memory.recording import Recording
from daemon.memory.records import Fact, FactStatus, Passage

log = logging.getLogger("memoryd.events")


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


class Store(Recording):
    """Reading memory back, and changing the status of what is in it."""

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

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
        """The passage and every statement read in it leave memory: their words leave Redis."""
        facts = await self.facts_by_id(passage.fact_ids)
        await self.forget_facts([f for f in facts if f.status != FactStatus.forgotten], reason)
        pipe = self.redis.pipeline(transaction=True)
        key = self.keys.passage(passage.id)
        pipe.hset(key, mapping={"status": FactStatus.forgotten.value, "reason": reason, "text": ""})
        pipe.delete(self.keys.passage(passage.id, "questions"))
        await pipe.execute()
        await self.scrub([passage.text])

    async def forget_facts(self, facts: list[Fact], reason: str) -> None:
        """Forgotten, and their words gone from Redis.

        A fact keeps its id (a hash), its status and its counts, so that it is
        not learned again when it recurs; its text, its sentence as written,
        the wordings merged into it and that sentence in every passage it was
        read in are removed, and so are the log entries and run reasons that
        quote it.
        """
        if not facts:
            return
        words = [w for f in facts for w in (f.text, f.source, *f.variants) if w]
        ids = {f.id for f in facts}
        pipe = self.redis.pipeline(transaction=True)
        for f in facts:
            mapping = {
                "status": FactStatus.forgotten.value,
                "reason": reason,
                "text": "",
                "source": "",
            }
            pipe.hset(self.keys.fact(f.id), mapping=mapping)  # type: ignore[arg-type]
            pipe.delete(self.keys.fact(f.id, "variants"))
        for p in await self.passages(limit=100_000):
            if ids.intersection(p.fact_ids) and p.text:
                text = p.text
                for w in words:
                    text = text.replace(w, "")
                pipe.hset(self.keys.passage(p.id), "text", text)
        await pipe.execute()
        self.unlearn(ids)
        for f in facts:  # as the caller last sees them
            f.status, f.reason = FactStatus.forgotten, reason
        await self.scrub(words)

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
        await self.forget_facts(matched, reason)
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


def fingerprint(ids: Iterable[str]) -> str:
    """Names what a consolidation would learn (passage and fact ids), so it is not run twice."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]
