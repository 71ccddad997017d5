"""Decide when to consolidate, run the consolidator child, and act on its verdict.

Chat wins: when a request arrives the child is told (PAUSE, daemon.contract: it
aborts its own engine requests) and then paused (SIGSTOP); it resumes (RESUME)
once the daemon is idle again, so neither training nor the consolidator's generations compete
with chat for the accelerator or the CPU.

The verdict is the run's state in Redis (daemon.memory.lifecycle), written by
the child; a passed run is promoted here. A run that ends without one (the
child killed by a signal, or stopped because memoryd shuts down) is failed as
one try of its fact set and whatever it left is cleaned up; below
``consolidation.max_tries`` the same fact set runs again at the next idle
moment and resumes from the checkpoint (consolidator.checkpoint). Whenever no
run of its own is going, the daemon also settles the runs no worker holds a
claim on any more (left by a daemon that died): a passed one is promoted, not
trained again; the others are failed as a try. With ``consolidation.runner``
"workers" the daemon runs no child: it queues runs, consolidator.service
workers take them from Redis, and a passed one is promoted here the same way.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
from enum import Enum
from pathlib import Path

from daemon.activity import Activity
from daemon.config import Settings
from daemon.contract import EXIT_CLAIMED, PAUSE, RESUME, WorkerArgs
from daemon.engine.adapters import adapter_dir, staging_dir
from daemon.engine.swap import Swapper
from daemon.memory.records import Consolidation, FactStatus, RunState, now
from daemon.memory.store import Store, fingerprint
from daemon.metrics import Metrics
from daemon.retirement import retire
from daemon.scope import Scope
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
        scope: Scope | None = None,
    ) -> None:
        """``scope``: whose memory this consolidates (default: the default tenant's)."""
        self.scope = scope or Scope.of(settings)
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
        """Scheduler job: settle abandoned runs, resume a paused run, start one on idle and news."""
        cfg = self.settings.consolidation
        elsewhere = self.phase == Phase.idle and await self.recover()
        idle = self.activity.idle_for() >= cfg.idle_after_s
        if self.phase == Phase.paused and idle:
            self._signal(RESUME, Phase.running)
        if self.phase != Phase.idle or elsewhere or not idle or not self.enabled:
            return
        await self.expire()
        anything, current = await self._memory()
        if current == await self.store.last_attempt():
            return
        if anything:
            await self.start("idle")
        elif self.swapper.active:
            # Every consolidated fact was forgotten: nothing left to remember.
            await self.swapper.deactivate()
            await self.store.set_last_attempt(current)
            log.info("all consolidated facts forgotten; serving the base model")

    async def _memory(self) -> tuple[bool, str]:
        """Whether some passage recurred enough, and the fingerprint of what a run would learn."""
        selected = await self.store.eligible(self.settings.consolidation.min_conversations)
        ids = [p.id for p, _ in selected]
        ids += [f.id for _, fs in selected for f in fs if f.status.active]
        return bool(selected), fingerprint(ids)

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
        """Queue a run and spawn its consolidator; the operator's gives its fact set fresh tries."""
        if self.phase != Phase.idle:
            raise AlreadyRunning(f"consolidation {self.run_id} is {self.phase.value}")
        self.phase = Phase.running
        try:
            _, current = await self._memory()
            run = await self.store.new_run(trigger, current, fresh_tries=trigger == "operator")
        except Exception:
            self.phase = Phase.idle
            raise
        if self.settings.consolidation.runner == "workers":
            self.phase = Phase.idle  # a worker elsewhere takes it from Redis
            log.info("consolidation %s queued for a worker: %s", run.id, trigger)
            return run.id
        self.run_id = run.id
        settings_file = self.scope.run_dir / f"settings-{run.id}.json"
        try:
            self.settings.write_for_child(settings_file)
            argv = WorkerArgs(
                settings=settings_file,
                run_id=run.id,
                redis_url=self.redis_url,
                engine_url=self.engine_url,
                tenant=self.scope.tenant,
            ).argv()
            log_file = self.scope.logs_dir / f"consolidation-{run.id}.log"
            who = f" of {self.scope.tenant}" if self.scope.named else ""
            self._child = await Child.spawn(
                Command(
                    name=f"consolidation {run.id}{who}",
                    argv=argv,
                    log_file=log_file,
                    stop_grace_s=20.0,
                )
            )
        except Exception as exc:
            try:
                why = f"the consolidator could not start: {exc}"
                await self.store.transition(run, RunState.failed, error=why)
            finally:
                self.phase = Phase.idle
            raise
        log.info("consolidation %s%s triggered: %s", run.id, who, trigger)
        self._task = asyncio.create_task(self._finish(run.id, settings_file), name="consolidation")
        return run.id

    # --- outcome --------------------------------------------------------------
    async def _finish(self, run_id: int, settings_file: Path) -> None:
        """The child is gone: act on the verdict it stored, or fail a run left without one."""
        assert self._child is not None
        code = await self._child.wait()
        settings_file.unlink(missing_ok=True)
        try:
            run = await self.store.run(run_id)
            if run is None:
                return
            if run.state == RunState.passed:
                await self._promote(run)
            elif code == EXIT_CLAIMED:
                log.warning(
                    "consolidation %s was not ours to run: left %s", run_id, run.state.value
                )
            elif not run.state.settled:
                await self._no_verdict(run, code)
            if run.state == RunState.failed:
                await self._clean_up(run_id)
            if run.state.settled:
                self.metrics.consolidations.labels(run.state.value).inc()
                self.metrics.consolidation_seconds.observe(now() - run.started_at)
            log.info("consolidation %s ended %s: exit %s", run_id, run.state.value, code)
        except Exception:
            log.exception("handling the end of consolidation %s failed", run_id)
        finally:
            self.phase = Phase.idle
            self._child = None

    async def _no_verdict(self, run: Consolidation, code: int) -> None:
        """Interrupted (a signal, memoryd stopping) counts as a try; any other exit just fails."""
        if self._stopping or code < 0:
            cause = (
                "memoryd shut down during the run"
                if self._stopping
                else f"killed by {signal.Signals(-code).name}"
            )
            await self.store.interrupt(run, cause, self.settings.consolidation.max_tries)
        else:
            why = f"the consolidator exited with {code} without a verdict"
            await self.store.transition(run, RunState.failed, error=why)

    async def _clean_up(self, run_id: int) -> None:
        """Nothing of a failed run may serve."""
        staging = staging_dir(adapter_dir(self.scope.adapters_dir, run_id))
        shutil.rmtree(staging, ignore_errors=True)  # a child killed while saving
        await self.swapper.discard(run_id)

    async def _promote(self, run: Consolidation) -> None:
        """Serve a passed run's adapter (verified as it loads) and mark what it learned."""
        started = now()
        try:
            await self.swapper.promote(run.id)
        except Exception as exc:
            await self.store.transition(run, RunState.failed, error=f"promotion failed: {exc}")
            return
        # A fact or passage forgotten or replaced while the run trained stays so.
        kept = await self.store.active_ids(run.fact_ids)
        await self.store.set_status(kept, FactStatus.consolidated, run.id)
        passages = [
            p.id for p in await self.store.passages_by_id(run.passage_ids) if p.status.active
        ]
        await self.store.set_passage_status(passages, FactStatus.consolidated, run.id)
        run.metrics["promote_seconds"] = round(now() - started, 3)
        await self.store.transition(run, RunState.promoted, detail={"adapter": run.adapter})
        await retire(self.scope, self.store, self.swapper)  # the ones it replaces

    async def recover(self) -> bool:
        """Settle runs no worker holds a claim on (their daemon or consolidator died).

        A passed one is promoted: its adapter is on disk and its checkpoint is
        gone. The others are failed as one more try of their fact set, except
        a queued one where workers take the runs (consolidation.runner). True
        while a live worker holds some run, or one waits for a worker: no other
        is started meanwhile.
        """
        runs = await self.store.open_runs()
        waiting = self.settings.consolidation.runner == "workers"
        for run, claimed in runs:
            if claimed or self.phase != Phase.idle:
                continue  # its worker is alive, or a run of ours started meanwhile
            if waiting and run.state == RunState.queued:
                continue  # for a worker to take
            if run.state == RunState.passed:
                await self._promote(run)
            else:
                cause = "no worker holds it any more (memoryd or its consolidator stopped)"
                await self.store.interrupt(run, cause, self.settings.consolidation.max_tries)
            if run.state == RunState.failed:
                await self._clean_up(run.id)
            log.info("consolidation %s recovered: %s", run.id, run.state.value)
        return any(claimed or (waiting and run.state == RunState.queued) for run, claimed in runs)

    async def stop(self) -> None:
        self._stopping = True
        if self._child and self._child.running:
            await self._child.stop()  # SIGCONT with SIGTERM: a paused run can act on it
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)
