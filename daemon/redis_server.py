"""A private redis-server child on a unix socket, for when no Redis URL is configured.

It is supervised like the vLLM child (daemon.supervisor): if it dies or stops
answering PING it is started again on the same directory, and its append-only
file brings back everything it had acknowledged. While it is down chat goes on;
observations that cannot be written are counted (see daemon.memory.observer).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from daemon.supervisor import ChildSpec, Command, Probe, Supervisor


async def ping(socket: Path) -> bool:
    """PING over the socket: a bare exchange, so the probe needs no client to clean up."""
    reader, writer = await asyncio.open_unix_connection(socket)
    try:
        writer.write(b"PING\r\n")
        return await reader.readline() == b"+PONG\r\n"  # "-LOADING" while it reads its AOF
    finally:
        writer.close()


class PrivateRedis(Supervisor):
    def __init__(self, state_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: install it (apt-get install redis-server)")
        self.dir = (state_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        argv = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",  # redis flushes it on SIGTERM
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
        command = Command(name="redis-server", argv=argv, log_file=self.dir / "redis.log")
        super().__init__(
            ChildSpec(
                command=command,
                ready=Probe(lambda: ping(self.socket), every_s=0.1),
                ready_within_s=30.0,
                live=Probe(lambda: ping(self.socket), every_s=5.0),
            )
        )

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"
