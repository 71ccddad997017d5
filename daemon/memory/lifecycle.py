"""Every consolidation run's state, and every change of it, in one place.

The daemon queues a run; a consolidator (the daemon's child, or a worker
elsewhere) claims it, runs it and writes its verdict; the daemon promotes a
passed run. A change is checked against ALLOWED and written together with its
event in one Redis transaction that watches the run, so a change another
process made meanwhile refuses this one instead of being overwritten. The
verdict is the stored state; a consolidator's exit code only repeats it.

A claim is a lease: taken with SET NX PX, renewed while the worker works,
released at its end. A run that is not settled and that no claim covers has
nobody left to finish it (``open_runs``): the daemon promotes it if it passed,
else fails it as one more try of its fact set (``interrupt``).

Its keys (runs, claims, tries, events) are named in daemon.contract.Keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from daemon.contract import Keys
from daemon.memory.records import Consolidation, RunState, now

log = logging.getLogger("memoryd.events")

EVENTS_MAXLEN = 10_000
CLAIM_LEASE_S = 30.0  # a worker that stops renewing (killed, hung) loses its run this long after
NOT_RETRIED = "not retried until memory changes or `memoryd consolidate`"

ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.queued: frozenset({RunState.running, RunState.failed}),
    RunState.running: frozenset({RunState.passed, RunState.rejected, RunState.failed}),
    RunState.passed: frozenset({RunState.promoted, RunState.failed}),
    RunState.promoted: frozenset(),
    RunState.rejected: frozenset(),
    RunState.failed: frozenset(),
}

# Extend the lease if it is ours; take it again if it lapsed (a worker stopped
# for a while by chat: nobody else took it); refuse if another worker holds it.
RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Fields = dict[
    str | bytes | int | float | memoryview | bytearray,
    str | bytes | int | float | memoryview | bytearray,
]


class TransitionRefused(Exception):
    """The stored run is not in the state its writer saw, or may not go where it was sent."""


class ClaimHeld(Exception):
    """Another worker holds the run's claim."""


class Lifecycle:
    def __init__(self, redis: Redis, prefix: str) -> None:
        """``redis`` must be created with ``decode_responses=True``."""
        self.redis = redis
        self.keys = Keys(prefix)
        self._renew = redis.register_script(RENEW)
        self._release = redis.register_script(RELEASE)

    async def run(self, run_id: int) -> Consolidation | None:
        raw = await self.redis.get(self.keys.run(run_id))
        return Consolidation.model_validate_json(raw) if raw else None

    # --- state -------------------------------------------------------------
    async def new_run(
        self, trigger: str, fingerprint: str, fresh_tries: bool = False
    ) -> Consolidation:
        """Queue a run; ``fresh_tries`` (the operator asked) gives its fact set its tries back."""
        run_id = int(await self.redis.incr(self.keys.run_seq))
        run = Consolidation(id=run_id, trigger=trigger, fingerprint=fingerprint)
        detail: dict[str, object] = {"trigger": trigger}
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(self.keys.runs, {str(run.id): run.started_at})
        if fresh_tries:
            pipe.hdel(self.keys.tries, fingerprint)
        self._write(pipe, run, detail)
        await pipe.execute()
        self._logged(run.id, run.state.value, detail)
        return run

    async def transition(
        self,
        run: Consolidation,
        to: RunState,
        *,
        error: str | None = None,
        reasons: list[str] | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Move ``run`` (as its writer has it) to ``to``, with its event; ``run`` is updated.

        Refused (TransitionRefused) unless the stored run is still in ``run.state``
        and ALLOWED lets it go to ``to``. A verdict ends its fact set's tries.
        """
        update = _settling(to, error, reasons)
        shown: dict[str, object] = dict(detail or {})
        if error is not None:
            shown["error"] = error
        if reasons is not None:
            shown["reasons"] = reasons

        async def write(pipe: Pipeline) -> None:
            await self._check(pipe, run, to)
            pipe.multi()
            if to in (RunState.passed, RunState.rejected):
                pipe.hdel(self.keys.tries, run.fingerprint)
            self._write(pipe, run.model_copy(update=update), shown)

        await self.redis.transaction(write, self.keys.run(run.id))
        _apply(run, update)
        self._logged(run.id, to.value, shown)

    async def interrupt(self, run: Consolidation, cause: str, max_tries: int) -> None:
        """Fail a run that ended without a verdict, as one more try of its fact set.

        Below ``max_tries`` the last attempt is forgotten, so the next idle moment
        runs the fact set again (resuming its checkpoint); at the limit it is kept,
        so nothing retries it until memory changes or the operator asks.
        """
        tries_key, last_attempt = self.keys.tries, self.keys.last_attempt

        async def write(pipe: Pipeline) -> tuple[dict[str, Any], int]:
            await self._check(pipe, run, RunState.failed)
            tries = int(await pipe.hget(tries_key, run.fingerprint) or 0) + 1
            retried = tries < max_tries
            error = (
                f"{cause} (try {tries} of {max_tries}); the next run resumes from its checkpoint"
                if retried
                else f"{cause} on {tries} tries; {NOT_RETRIED}"
            )
            update = _settling(RunState.failed, error, None)
            pipe.multi()
            pipe.hset(tries_key, run.fingerprint, tries)
            if retried:
                pipe.delete(last_attempt)
            else:
                pipe.set(last_attempt, run.fingerprint)
            self._write(pipe, run.model_copy(update=update), {"error": error, "tries": tries})
            return update, tries

        update, tries = await self.redis.transaction(
            write, self.keys.run(run.id), tries_key, value_from_callable=True
        )
        _apply(run, update)
        self._logged(run.id, run.state.value, {"error": run.error, "tries": tries})

    async def save_progress(self, run: Consolidation) -> None:
        """Save a run's steps and metrics; refused once another process has moved it on."""

        async def write(pipe: Pipeline) -> None:
            await self._check(pipe, run, None)
            pipe.multi()
            pipe.set(self.keys.run(run.id), run.model_dump_json())

        await self.redis.transaction(write, self.keys.run(run.id))

    async def open_runs(self) -> list[tuple[Consolidation, bool]]:
        """Runs not settled, each with whether a worker's claim covers it (else nobody will)."""
        ids = sorted(await self.redis.smembers(self.keys.open_runs), key=int)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for run_id in ids:
            pipe.get(self.keys.run(str(run_id)))
            pipe.exists(self.keys.claim(str(run_id)))
        got = await pipe.execute()
        return [
            (Consolidation.model_validate_json(raw), bool(claimed))
            for raw, claimed in zip(got[::2], got[1::2], strict=True)
            if raw
        ]

    async def _check(self, pipe: Pipeline, run: Consolidation, to: RunState | None) -> None:
        """Read (watched) the stored state: it must be the writer's, and may go to ``to``."""
        raw = await pipe.get(self.keys.run(run.id))
        if not raw:
            raise TransitionRefused(f"consolidation {run.id} does not exist")
        stored = Consolidation.model_validate_json(raw).state
        if stored != run.state:
            raise TransitionRefused(
                f"consolidation {run.id} is {stored.value}, not {run.state.value}"
            )
        if to is not None and to not in ALLOWED[stored]:
            raise TransitionRefused(
                f"consolidation {run.id} is {stored.value}; it may not go to {to.value}"
            )

    def _write(self, pipe: Pipeline, run: Consolidation, detail: dict[str, object]) -> None:
        pipe.set(self.keys.run(run.id), run.model_dump_json())
        if run.state.settled:
            pipe.srem(self.keys.open_runs, run.id)
        else:
            pipe.sadd(self.keys.open_runs, run.id)
        pipe.xadd(
            self.keys.events,
            _fields(run.id, run.state.value, detail),
            maxlen=EVENTS_MAXLEN,
            approximate=True,
        )

    # --- events --------------------------------------------------------------
    async def event(self, run_id: int, step: str, **detail: object) -> None:
        """A step of a run's work (not a change of its state) on the log."""
        await self.redis.xadd(
            self.keys.events, _fields(run_id, step, detail), maxlen=EVENTS_MAXLEN, approximate=True
        )
        self._logged(run_id, step, detail)

    @staticmethod
    def _logged(run_id: int, step: str, detail: dict[str, object]) -> None:
        log.info(
            "consolidation %s: %s %s",
            run_id,
            step,
            json.dumps(detail, default=str),
            extra={"event": {"run": run_id, "step": step, **detail}},
        )

    # --- claims --------------------------------------------------------------
    async def claim(self, run_id: int, token: str, lease_s: float) -> bool:
        key = self.keys.claim(run_id)
        return bool(await self.redis.set(key, token, nx=True, px=int(lease_s * 1000)))

    async def claim_holder(self, run_id: int) -> str | None:
        raw = await self.redis.get(self.keys.claim(run_id))
        return str(raw) if raw else None

    async def renew_claim(self, run_id: int, token: str, lease_s: float) -> bool:
        key = self.keys.claim(run_id)
        return bool(await self._renew(keys=[key], args=[token, int(lease_s * 1000)]))

    async def release_claim(self, run_id: int, token: str) -> None:
        await self._release(keys=[self.keys.claim(run_id)], args=[token])


class Claim:
    """This worker's hold on a run: taken or refused (ClaimHeld), renewed while held."""

    def __init__(self, lifecycle: Lifecycle, run_id: int, lease_s: float = CLAIM_LEASE_S) -> None:
        self.lifecycle = lifecycle
        self.run_id = run_id
        self.lease_s = lease_s
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._renewing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Claim:
        if not await self.lifecycle.claim(self.run_id, self.token, self.lease_s):
            holder = await self.lifecycle.claim_holder(self.run_id)
            raise ClaimHeld(
                f"consolidation {self.run_id} is claimed by {holder or 'another worker'}"
            )
        self._renewing = asyncio.create_task(self._renew(), name=f"claim-{self.run_id}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._renewing:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        try:
            await self.lifecycle.release_claim(self.run_id, self.token)
        except RedisError:
            log.warning("releasing the claim on consolidation %s failed; it lapses", self.run_id)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self.lifecycle.renew_claim(self.run_id, self.token, self.lease_s):
                    holder = await self.lifecycle.claim_holder(self.run_id)
                    log.warning("consolidation %s: its claim is held by %s", self.run_id, holder)
            except RedisError:
                log.warning("renewing the claim on consolidation %s failed", self.run_id)


def _settling(to: RunState, error: str | None, reasons: list[str] | None) -> dict[str, Any]:
    """The fields a transition to ``to`` sets on the run."""
    update: dict[str, Any] = {"state": to}
    if to.settled:
        update["finished_at"] = now()
    if error is not None:
        update["error"] = error
    if reasons is not None:
        update["reasons"] = reasons
    return update


def _apply(run: Consolidation, update: dict[str, Any]) -> None:
    for name, value in update.items():
        setattr(run, name, value)


def _fields(run_id: int, step: str, detail: dict[str, object]) -> Fields:
    return {
        "run": run_id,
        "step": step,
        "at": f"{now():.3f}",
        "detail": json.dumps(detail, default=str, ensure_ascii=False),
    }
