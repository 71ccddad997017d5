"""A private redis-server child on a unix socket, for when no Redis URL is configured.

It is supervised like the vLLM child: if it dies it is started again on the same
directory, and its append-only file brings back everything it had acknowledged.
While it is down chat goes on; observations that cannot be written are counted
(see daemon.memory.observer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path

from daemon.children import die_with_parent
from daemon.memory.store import connect

log = logging.getLogger("memoryd.redis")
RESTART_BACKOFF_S = (2.0, 5.0, 10.0, 30.0)


class PrivateRedis:
    def __init__(self, state_dir: Path) -> None:
        self.dir = (state_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.returncode is None else None

    def supervise(self) -> None:
        self._watch = asyncio.create_task(self._supervise(), name="redis-supervisor")

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            log.error("private redis-server exited with %s; restarting in %.0fs", code, delay)
            self.restarts += 1
            await asyncio.sleep(delay)
            try:
                await self.start()
            except Exception:
                log.exception("restarting redis-server failed")

    async def start(self, timeout_s: float = 30.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: install it (apt-get install redis-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        client = connect(self.url)
        try:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"redis-server exited; see {self.dir / 'redis.log'}")
                try:
                    if await client.ping():
                        log.info("private Redis ready at %s", self.url)
                        return
                except Exception:
                    await asyncio.sleep(0.1)
        finally:
            await client.aclose()
        raise TimeoutError("private redis-server did not answer")

    async def stop(self) -> None:
        self._stopping = True
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()  # redis flushes its AOF on SIGTERM
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except asyncio.TimeoutError:
                self.proc.kill()
