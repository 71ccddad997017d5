"""The consolidation log: runs, their events, the active adapter version, in Redis.

Keys (under the configured prefix ``P``):
  P:runs                      zset  run id -> started at
  P:run:<id>                  string  Consolidation JSON
  P:run:seq                   counter for run ids (= adapter versions)
  P:active                    string  active adapter version
  P:last_attempt              string  fingerprint of the memory last consolidated
  P:events                    stream  consolidation log an operator can tail
"""

from __future__ import annotations

import json
import logging

from redis.asyncio import Redis

from daemon.memory.records import Consolidation, now

log = logging.getLogger("memoryd.events")

EVENTS_MAXLEN = 10_000


class RunLog:
    def __init__(self, redis: Redis, prefix: str) -> None:
        """``redis`` must be created with ``decode_responses=True``."""
        self.redis = redis
        self.p = prefix

    def _k(self, *parts: object) -> str:
        return ":".join([self.p, *(str(p) for p in parts)])

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
