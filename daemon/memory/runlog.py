"""The consolidation log as read back: runs, their events, the active adapter version.

Runs are created and change state only through daemon.memory.lifecycle, which
also writes the events. Its keys are named in daemon.contract.Keys. What was
forgotten leaves the log too (``scrub``): a run's reasons name a passage by its
first words, and the events repeat them.
"""

from __future__ import annotations

import re

from daemon.memory.lifecycle import EVENTS_MAXLEN, Lifecycle
from daemon.memory.records import Consolidation

QUOTED = 40  # a reason quotes a passage by its first 60 characters; 40 of them identify it
FORGOTTEN = "[forgotten]"


class RunLog(Lifecycle):
    # --- consolidation runs --------------------------------------------------
    async def runs(self, limit: int = 50) -> list[Consolidation]:
        ids = await self.redis.zrevrange(self.keys.runs, 0, limit - 1)
        raws = await self.redis.mget([self.keys.run(str(i)) for i in ids]) if ids else []
        return [Consolidation.model_validate_json(r) for r in raws if r]

    async def events(
        self, last_id: str = "0", count: int = 100
    ) -> list[tuple[str, dict[str, str]]]:
        raw = await self.redis.xrange(
            self.keys.events, min=f"({last_id}" if last_id != "0" else "-", count=count
        )
        return [(str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in raw or []]

    async def last_event_id(self) -> str:
        """Where a reader that wants only what comes next starts ("0" when the log is empty)."""
        raw = await self.redis.xrevrange(self.keys.events, count=1)
        return str(raw[0][0]) if raw else "0"

    # --- active adapter ------------------------------------------------------
    async def active_version(self) -> int | None:
        raw = await self.redis.get(self.keys.active)
        return int(raw) if raw else None

    async def set_active_version(self, version: int | None) -> None:
        if version is None:
            await self.redis.delete(self.keys.active)
        else:
            await self.redis.set(self.keys.active, version)

    async def last_attempt(self) -> str | None:
        raw = await self.redis.get(self.keys.last_attempt)
        return str(raw) if raw else None

    async def set_last_attempt(self, fingerprint: str) -> None:
        await self.redis.set(self.keys.last_attempt, fingerprint)

    # --- forgetting ------------------------------------------------------------
    async def scrub(self, texts: list[str]) -> None:
        """Delete the events that quote any of ``texts``; blank the quote in runs' reasons."""
        quotes = [t[:QUOTED] for t in texts if t.strip()]
        if not quotes:
            return
        quoted = re.compile("|".join(re.escape(q) + r"[^)\"]*" for q in quotes))
        events = await self.events(count=EVENTS_MAXLEN * 2)
        doomed = [i for i, f in events if any(quoted.search(v) for v in f.values())]
        if doomed:
            await self.redis.xdel(self.keys.events, *doomed)
        for run in await self.runs(limit=100_000):
            raw = run.model_dump_json()
            if quoted.search(raw):
                run.reasons = [quoted.sub(FORGOTTEN, r) for r in run.reasons]
                run.error = quoted.sub(FORGOTTEN, run.error) if run.error else None
                await self.redis.set(self.keys.run(run.id), run.model_dump_json())
