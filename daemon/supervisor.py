"""One way to run every child process: spawn, wait until ready, watch, restart, stop.

Redis and the vLLM replicas are long-lived: a :class:`Supervisor` restarts one
that exits, never becomes ready, or stops answering its liveness probe (a hung
child is as useless as a dead one, and only SIGKILL is sure to end it). The
consolidator is one-shot: it is a bare :class:`Child`, spawned and stopped the
same way but never restarted.

Every child leads its own process group, so one signal reaches its helpers too
(vLLM's engine workers, the consolidator's data loaders), and it dies with the
daemon (daemon.children).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daemon.children import die_with_parent
from daemon.logs import Rotation

log = logging.getLogger("memoryd.supervisor")
Check = Callable[[], Awaitable[bool]]


@dataclass(frozen=True, kw_only=True)
class Command:
    """How to spawn one child and how long it may take to stop."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)  # on top of the daemon's environment
    cwd: Path | None = None
    log_file: Path | None = None  # stdout and stderr; None = discarded
    log_rotation: Rotation | None = None  # applied at each spawn and liveness probe
    stop_grace_s: float = 10.0  # between SIGTERM and SIGKILL


@dataclass(frozen=True)
class Probe:
    """Asks the child whether it is well; an answer that raises or overruns its timeout is no."""

    check: Check
    every_s: float
    timeout_s: float = 5.0

    async def passes(self, timeout_s: float | None = None) -> bool:
        try:
            return await asyncio.wait_for(self.check(), timeout_s or self.timeout_s)
        except Exception:
            return False


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Waits before a restart double from ``first_s`` up to ``max_s``.

    A child that stayed healthy for ``reset_after_s`` starts again from ``first_s``:
    an occasional crash is not a crash loop.
    """

    first_s: float = 2.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.first_s * 2 ** (failures - 1))


@dataclass(frozen=True, kw_only=True)
class ChildSpec:
    """A long-lived child: its command, and the probes that tell it is ready and alive."""

    command: Command
    ready: Probe
    ready_within_s: float = 60.0  # else it is killed: a failed start
    live: Probe
    hung_after: int = 3  # consecutive failed liveness probes
    backoff: Backoff = Backoff()


class Child:
    """One spawned process, the leader of its own process group."""

    def __init__(self, command: Command, proc: asyncio.subprocess.Process) -> None:
        self.command = command
        self.proc = proc

    @classmethod
    async def spawn(cls, command: Command) -> Child:
        out = asyncio.subprocess.DEVNULL
        with contextlib.ExitStack() as files:
            if command.log_file:
                command.log_file.parent.mkdir(parents=True, exist_ok=True)
                if command.log_rotation:
                    await asyncio.to_thread(command.log_rotation.apply, command.log_file)
                out = files.enter_context(command.log_file.open("ab")).fileno()
            proc = await asyncio.create_subprocess_exec(
                *command.argv,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **command.env},
                cwd=command.cwd,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        log.info("%s started (pid %s), log %s", command.name, proc.pid, command.log_file)
        return cls(command, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def wait(self) -> int:
        return await self.proc.wait()

    def signal(self, sig: signal.Signals) -> bool:
        """Signal the whole group; False when none of it is left."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    async def kill(self) -> int:
        """SIGKILL the group: the one signal a hung or stopped child cannot ignore."""
        self.signal(signal.SIGKILL)
        return await self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM to the group, the grace period for the child to exit, then SIGKILL for the rest.

        SIGCONT follows SIGTERM, so a paused child can act on it.
        """
        self.signal(signal.SIGTERM)
        self.signal(signal.SIGCONT)
        try:
            await asyncio.wait_for(self.proc.wait(), self.command.stop_grace_s)
        except asyncio.TimeoutError:
            log.warning(
                "%s ignored SIGTERM for %.0fs: killing it",
                self.command.name,
                self.command.stop_grace_s,
            )
        return await self.kill()


class Supervisor:
    """Keeps one child ready: restarts it, with backoff, when it exits, hangs or fails to start.

    ``start`` runs the first start (its failure is the caller's), ``supervise``
    watches from then on, ``stop`` ends both. ``on_down`` runs as soon as the
    child is found dead or hung, ``on_ready`` after every restart (the first
    start's caller sets up what it needs itself).
    """

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.child: Child | None = None
        self.ready = False
        self.restarts = 0
        self.failures = 0  # in a row, without a healthy period between: sets the backoff
        self._ready_at = 0.0
        self._on_ready: Callable[[], Awaitable[None]] | None = None
        self._on_down: Callable[[], None] | None = None
        self._watch: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.command.name

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child and self.child.running else None

    async def start(self) -> None:
        """Spawn the child and wait for its readiness probe; a child that fails it is killed."""
        self.child = await Child.spawn(self.spec.command)
        try:
            await self._until_ready(self.child)
        except Exception:
            await self.child.kill()
            raise
        self.ready, self._ready_at = True, time.monotonic()
        log.info("%s ready (pid %s)", self.name, self.child.pid)

    def supervise(
        self,
        on_ready: Callable[[], Awaitable[None]] | None = None,
        on_down: Callable[[], None] | None = None,
    ) -> None:
        self._on_ready, self._on_down = on_ready, on_down
        self._watch = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()
            await asyncio.wait({self._watch})
        self.ready = False
        if self.child and self.child.running:
            await self.child.stop()

    async def _until_ready(self, child: Child) -> None:
        probe, within = self.spec.ready, self.spec.ready_within_s
        see = f"; see {child.command.log_file}" if child.command.log_file else ""
        deadline = time.monotonic() + within
        while True:
            if not child.running:
                code = child.proc.returncode
                raise RuntimeError(f"{self.name} exited with {code} while starting{see}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name} was not ready within {within:g}s{see}")
            if await probe.passes(min(probe.timeout_s, left)):
                return
            await asyncio.sleep(min(probe.every_s, max(0.0, deadline - time.monotonic())))

    async def _until_unwell(self, child: Child) -> str:
        """Why the child is no longer of use: it exited, or it failed ``hung_after`` probes in a row."""
        probe = self.spec.live
        exited = asyncio.ensure_future(child.wait())
        failed = 0
        try:
            while failed < self.spec.hung_after:
                await asyncio.wait({exited}, timeout=probe.every_s)
                if exited.done():
                    return f"exited with {exited.result()}"
                if child.command.log_file and child.command.log_rotation:
                    # A copy of up to log_max_mib: off the event loop.
                    await asyncio.to_thread(
                        child.command.log_rotation.apply, child.command.log_file
                    )
                failed = 0 if await probe.passes() else failed + 1
        finally:
            exited.cancel()
        return f"hung ({failed} liveness probes failed in a row)"

    async def _supervise(self) -> None:
        while True:
            assert self.child is not None
            why = await self._until_unwell(self.child)
            self.ready = False
            if self._on_down:
                self._on_down()
            await self.child.kill()
            if time.monotonic() - self._ready_at >= self.spec.backoff.reset_after_s:
                self.failures = 0
            await self._restart(why)
            if self._on_ready:
                try:
                    await self._on_ready()
                except Exception:
                    log.exception("%s is ready again, but its on_ready failed", self.name)

    async def _restart(self, why: str) -> None:
        """Start the child again, after a longer wait for each failure in a row, until it is ready."""
        while True:
            self.failures += 1
            delay = self.spec.backoff.delay(self.failures)
            log.error("%s %s; restarting in %.1fs", self.name, why, delay)
            await asyncio.sleep(delay)
            self.restarts += 1
            try:
                await self.start()
                return
            except Exception as exc:
                why = f"failed to start: {exc}"
