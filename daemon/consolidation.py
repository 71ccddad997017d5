"""Decide when to consolidate, run the consolidator child, and act on its verdict.

Chat wins: when a request arrives the child is told (PAUSE, daemon.contract: it
aborts its own engine requests) and then paused (SIGSTOP); it resumes (RESUME)
once the daemon is idle again, so neither training nor the consolidator's generations compete
with chat for the accelerator or the CPU.

A run that ends without a verdict (the child killed by a signal, or stopped
because memoryd shuts down) is failed, whatever it left is cleaned up, and the
same fact set is tried again at the next idle moment: the new run resumes from
the checkpoint (see consolidator.checkpoint).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
from enum import Enum
from pathlib import Path

from daemon.activity import Activity
from daemon.config import Settings
from daemon.contract import EXIT_PASSED, EXIT_REJECTED, PAUSE, RESUME
from daemon.engine.adapters import adapter_dir, staging_dir
from daemon.engine.swap import Swapper
from daemon.memory.records import FactStatus, RunState, now
from daemon.memory.store import Store, fingerprint
from daemon.metrics import Metrics
from daemon.supervisor import Child, Command

log = logging.getLogger("memoryd.consolidation")
ABORT_GRACE_S = 0.2  # for the child to abort its engine requests before it is stopped


class Phase(str, Enum):
    idle = "idle"
    running = "running"
    paused = "paused"


class AlreadyRunning(Exception):
    pass


class Consolidator:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        swapper: Swapper,
        activity: Activity,
        metrics: Metrics,
        redis_url: str,
        engine_url: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.swapper = swapper
        self.activity = activity
        self.metrics = metrics
        self.redis_url = redis_url
        self.engine_url = engine_url
        self.phase = Phase.idle
        self.run_id: int | None = None
        self.enabled = True
        self._child: Child | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child and self._child.running else None

    # --- triggers -------------------------------------------------------------
    async def tick(self) -> None:
        """Scheduler job: resume a paused run, or start one when idle and there is news."""
        cfg = self.settings.consolidation
        idle = self.activity.idle_for() >= cfg.idle_after_s
        if self.phase == Phase.paused and idle:
            self._signal(RESUME, Phase.running)
        if self.phase != Phase.idle or not idle or not self.enabled:
            return
        await self.expire()
        selected = await self.store.eligible(cfg.min_conversations)
        current = fingerprint(
            [p.id for p, _ in selected]
            + [f.id for _, fs in selected for f in fs if f.status.active]
        )
        if current == await self.store.last_attempt():
            return
        if selected:
            await self.start("idle")
        elif self.swapper.active:
            # Every consolidated fact was forgotten: nothing left to remember.
            await self.swapper.deactivate()
            await self.store.set_last_attempt(current)
            log.info("all consolidated facts forgotten; serving the base model")

    async def expire(self) -> None:
        """Facts not seen for facts.ttl_days decay out; the next adapter is made without them."""
        ttl = self.settings.facts.ttl_days
        if not ttl:
            return
        reason = f"not seen for {ttl:g} days"
        expired = await self.store.expire(now() - ttl * 86400, reason)
        if expired:
            log.info("%d facts expired (%s): %s", len(expired), reason, ", ".join(expired))

    def on_chat(self) -> None:
        """A chat request arrived: pause a running consolidation."""
        if self.phase == Phase.running and self._signal(PAUSE, Phase.paused):
            asyncio.get_running_loop().call_later(ABORT_GRACE_S, self._stop_if_paused)

    def _stop_if_paused(self) -> None:
        if self.phase == Phase.paused:
            self._signal(signal.SIGSTOP, Phase.paused)

    def _signal(self, sig: signal.Signals, phase: Phase) -> bool:
        """Signal the run's process group; once it is delivered the run is in ``phase``."""
        if self._child and self._child.running and self._child.signal(sig):
            self.phase = phase
            return True
        return False

    async def start(self, trigger: str) -> int:
        if self.phase != Phase.idle:
            raise AlreadyRunning(f"consolidation {self.run_id} is {self.phase.value}")
        self.phase = Phase.running
        try:
            run = await self.store.new_run(trigger)
            self.run_id = run.id
            settings_file = self.settings.state_dir / "run" / f"settings-{run.id}.json"
            settings_file.parent.mkdir(parents=True, exist_ok=True)
            settings_file.write_text(self.settings.model_dump_json())
            argv = [
                sys.executable, "-m", "consolidator",
                "--settings", str(settings_file),
                "--run-id", str(run.id),
                "--redis-url", self.redis_url,
                "--engine-url", self.engine_url,
            ]  # fmt: skip
            log_file = self.settings.state_dir / "logs" / f"consolidation-{run.id}.log"
            self._child = await Child.spawn(
                Command(
                    name=f"consolidation {run.id}", argv=argv, log_file=log_file, stop_grace_s=20.0
                )
            )
        except Exception:
            self.phase = Phase.idle
            raise
        log.info("consolidation %s triggered: %s", run.id, trigger)
        self._task = asyncio.create_task(self._finish(run.id, settings_file), name="consolidation")
        return run.id

    # --- outcome --------------------------------------------------------------
    async def _finish(self, run_id: int, settings_file: Path) -> None:
        assert self._child is not None
        code = await self._child.wait()
        settings_file.unlink(missing_ok=True)
        try:
            run = await self.store.run(run_id)
            if run is None:
                return
            if code == EXIT_PASSED:
                await self._promote(run_id)
            elif code != EXIT_REJECTED:
                await self._fail(run_id, code)
            final = await self.store.run(run_id)
            if final is not None:
                self.metrics.consolidations.labels(final.state.value).inc()
                self.metrics.consolidation_seconds.observe(now() - final.started_at)
            log.info("consolidation %s ended: exit %s", run_id, code)
        except Exception:
            log.exception("handling the end of consolidation %s failed", run_id)
        finally:
            self.phase = Phase.idle
            self._child = None

    async def _fail(self, run_id: int, code: int) -> None:
        """No verdict: nothing of the run may serve; an interrupted run is tried again."""
        run = await self.store.run(run_id)
        assert run is not None
        interrupted = code < 0 or self._stopping
        if run.state == RunState.running:
            if self._stopping:
                why = "memoryd shut down during the run; the next run resumes from its checkpoint"
            elif code < 0:
                why = f"the consolidator was killed by {signal.Signals(-code).name}"
            else:
                why = f"the consolidator exited with {code}"
            run.state, run.finished_at, run.error = RunState.failed, now(), run.error or why
            await self.store.save_run(run)
            await self.store.event(run_id, "failed", error=run.error)
        staging = staging_dir(adapter_dir(self.settings.adapters_dir, run_id))
        shutil.rmtree(staging, ignore_errors=True)  # a child killed while saving
        await self.swapper.discard(run_id)
        if interrupted:
            await self.store.clear_last_attempt()

    async def _promote(self, run_id: int) -> None:
        run = await self.store.run(run_id)
        assert run is not None
        started = now()
        try:
            await self.swapper.promote(run_id)
        except Exception as exc:
            run.state, run.error = RunState.failed, f"promotion failed: {exc}"
        else:
            run.state = RunState.promoted
            # A fact or passage forgotten or replaced while the run trained stays so.
            kept = await self.store.active_ids(run.fact_ids)
            await self.store.set_status(kept, FactStatus.consolidated, run_id)
            passages = [
                p.id for p in await self.store.passages_by_id(run.passage_ids) if p.status.active
            ]
            await self.store.set_passage_status(passages, FactStatus.consolidated, run_id)
            run.metrics["promote_seconds"] = round(now() - started, 3)
        run.finished_at = now()
        await self.store.save_run(run)
        await self.store.event(run_id, run.state.value, adapter=run.adapter)

    async def recover(self) -> None:
        """At start-up: runs left 'running' by a daemon that died are failed, then retried."""
        for run in await self.store.runs(limit=20):
            if run.state == RunState.running:
                run.state, run.finished_at = RunState.failed, now()
                run.error = "the daemon stopped while this run was in progress"
                await self.store.save_run(run)
                await self.store.clear_last_attempt()

    async def stop(self) -> None:
        self._stopping = True
        if self._child and self._child.running:
            await self._child.stop()  # SIGCONT with SIGTERM: a paused run can act on it
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)
