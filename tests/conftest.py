"""Fixtures that run the real parts: redis-server, the memoryd daemon with its vLLM child."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import ROOT, Daemon, daemon_env


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model, prepared once (``make test`` prepares it under var/)."""
    given = os.environ.get("MEMORYD_TEST_MODEL")
    if given:
        return Path(given)
    from daemon.bundled_model import prepare

    return prepare(ROOT / "var" / "models" / "SmolLM2-135M-Instruct")


@dataclass
class RedisServer:
    socket: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp_path),
         "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield RedisServer(sock, proc)
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def make_daemon(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path
) -> Iterator[Callable[..., Daemon]]:
    """Daemons that stop when their module ends: an idle engine still holds memory and CPU."""
    started: list[Daemon] = []

    def make(name: str, extra_env: dict[str, str] | None = None, **overrides: str) -> Daemon:
        state = tmp_path_factory.mktemp(name)
        env, port = daemon_env(state, model_dir, **overrides)
        env.update(extra_env or {})
        d = Daemon(state, port, env)
        d.start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


@pytest.fixture(scope="module")
def notify_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[socket.socket]:
    """Stands in for systemd's notification socket (the protocol is one datagram per message)."""
    path = tmp_path_factory.mktemp("notify") / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture(scope="module")
def daemon(
    make_daemon: Callable[..., Daemon],
    notify_socket: socket.socket,
    tmp_path_factory: pytest.TempPathFactory,
) -> Daemon:
    """A daemon that will not consolidate on its own during the module, run as if under systemd.

    Its config file is a copy the module may edit (SIGHUP reload).
    """
    config = tmp_path_factory.mktemp("api-config") / "memoryd.yaml"
    shutil.copy(ROOT / "configs" / "default.yaml", config)
    return make_daemon(
        "api",
        extra_env={
            "NOTIFY_SOCKET": notify_socket.getsockname(),
            "WATCHDOG_USEC": "4000000",
            "MEMORYD_CONFIG": str(config),
        },
        consolidation__idle_after_s="100000",
        log_format="json",
    )
