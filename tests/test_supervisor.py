"""The child supervisor on real, small processes: hangs, crashes, failed starts, stopping.

The child is a tiny HTTP server that answers /health, as vLLM does: SIGSTOP makes
it hang, SIGKILL makes it crash, and a marker file makes every new one start but
never answer. PrivateRedis runs a real redis-server; ManagedEngine runs the tiny
server in place of vLLM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.config import EngineConfig
from daemon.engine import process
from daemon.engine.process import ManagedEngine
from daemon.logs import Rotation
from daemon.memory.store import connect
from daemon.redis_server import PrivateRedis
from daemon.supervisor import Backoff, Child, ChildSpec, Command, Probe, Supervisor

SERVER = """
import http.server, os, signal, subprocess, sys, time
from pathlib import Path

port, state = int(sys.argv[1]), Path(sys.argv[2])
with (state / "pids").open("a") as pids:
    pids.write(f"{os.getpid()}\\n")
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the grandchild inherits this
if os.environ.get("GRANDCHILD"):
    (state / "grandchild").write_text(str(subprocess.Popen(["sleep", "3600"]).pid))
if (state / "stuck").exists():
    time.sleep(3600)


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""
LIVE = {"every_s": 0.2, "timeout_s": 0.3}
HUNG_AFTER = 2
QUICK = Backoff(first_s=0.1, max_s=1.0, reset_after_s=1.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def healthy(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.0\r\n\r\n")
        return (await reader.readline()).split()[1] == b"200"
    finally:
        writer.close()


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def until(what: str, done: Callable[[], bool], within_s: float) -> float:
    """Seconds until ``done()``; fails after ``within_s``."""
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < within_s, f"no {what} within {within_s}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


class Server:
    """The tiny server's spec and what its processes left in the state directory."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.state = tmp_path
        self.port = free_port()
        script = tmp_path / "server.py"
        script.write_text(SERVER)
        self.command = Command(
            name="server",
            argv=[sys.executable, str(script), str(self.port), str(tmp_path)],
            env=env,
            log_file=tmp_path / "server.log",
            stop_grace_s=1.0,
        )

    def spec(self, ready_within_s: float = 10.0) -> ChildSpec:
        return ChildSpec(
            command=self.command,
            ready=Probe(lambda: healthy(self.port), every_s=0.05),
            ready_within_s=ready_within_s,
            live=Probe(lambda: healthy(self.port), **LIVE),
            hung_after=HUNG_AFTER,
            backoff=QUICK,
        )

    def pids(self) -> list[int]:
        path = self.state / "pids"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stuck(self, on: bool) -> None:
        """While on, every new server starts but never answers."""
        if on:
            (self.state / "stuck").touch()
        else:
            (self.state / "stuck").unlink()


class Counter:
    """An on_ready callback that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1

    async def reached(self, calls: int, within_s: float = 10) -> None:
        await until(f"on_ready call {calls}", lambda: self.calls >= calls, within_s)


def crash(sup: Supervisor, sig: signal.Signals = signal.SIGKILL) -> int:
    pid = sup.pid
    assert pid is not None
    os.kill(pid, sig)
    return pid


async def test_a_hung_child_is_killed_and_replaced_within_its_liveness_deadline(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path)
    sup, on_ready = Supervisor(server.spec()), Counter()
    await sup.start()
    sup.supervise(on_ready)
    try:
        assert await healthy(server.port)
        hung = crash(sup, signal.SIGSTOP)
        deadline = HUNG_AFTER * (LIVE["every_s"] + LIVE["timeout_s"])
        noticed = await until("hang noticed", lambda: not sup.ready, deadline + 1.0)
        assert noticed >= HUNG_AFTER * LIVE["timeout_s"]  # one failed probe is not a hang
        await on_ready.reached(1)
        assert gone(hung) and sup.ready and sup.pid not in (None, hung)
        assert sup.restarts == 1 and await healthy(server.port)
    finally:
        await sup.stop()


async def test_a_crashed_child_is_restarted_and_on_ready_runs_again(tmp_path: Path) -> None:
    server = Server(tmp_path)
    sup, on_ready = Supervisor(server.spec()), Counter()
    await sup.start()
    sup.supervise(on_ready)
    try:
        for restarts in (1, 2):
            pid = crash(sup)
            await on_ready.reached(restarts)
            assert sup.ready and sup.restarts == restarts and sup.pid != pid
            assert await healthy(server.port)
    finally:
        await sup.stop()


async def test_a_child_never_ready_is_killed_at_its_deadline(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.stuck(True)
    sup = Supervisor(server.spec(ready_within_s=0.5))
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"not ready within 0\.5s"):
        await sup.start()
    assert 0.5 <= time.monotonic() - started < 2.0
    (pid,) = server.pids()
    assert gone(pid) and not sup.ready and sup.pid is None


async def test_failed_starts_are_retried_with_backoff_until_one_is_ready(tmp_path: Path) -> None:
    server = Server(tmp_path)
    sup, on_ready = Supervisor(server.spec(ready_within_s=1.0)), Counter()
    await sup.start()
    sup.supervise(on_ready)
    try:
        server.stuck(True)
        crash(sup)
        await until("two failed starts", lambda: len(server.pids()) >= 3, 10)
        server.stuck(False)
        await on_ready.reached(1)
        pids = server.pids()
        assert all(gone(p) for p in pids[:-1]) and sup.pid == pids[-1]
        # One restart per spawn after the first, each failed one waiting longer.
        assert sup.restarts == len(pids) - 1 == sup.failures
        assert [QUICK.delay(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    finally:
        await sup.stop()


async def test_backoff_resets_after_a_healthy_period(tmp_path: Path) -> None:
    server = Server(tmp_path)
    sup, on_ready = Supervisor(server.spec()), Counter()
    await sup.start()
    sup.supervise(on_ready)
    try:
        for failures in (1, 2, 3):  # each soon after the last restart: a crash loop
            crash(sup)
            await on_ready.reached(failures)
            assert sup.failures == failures
        await asyncio.sleep(QUICK.reset_after_s)
        crash(sup)
        await on_ready.reached(4)
        assert sup.failures == 1 and sup.restarts == 4
    finally:
        await sup.stop()


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_stop_ends_the_whole_process_group(tmp_path: Path, ignore_term: bool) -> None:
    env = {"GRANDCHILD": "1"} | ({"IGNORE_TERM": "1"} if ignore_term else {})
    server = Server(tmp_path, **env)
    sup = Supervisor(server.spec())
    await sup.start()
    sup.supervise()
    pid, grandchild = sup.pid, int((tmp_path / "grandchild").read_text())
    assert pid is not None and not gone(grandchild)
    started = time.monotonic()
    await sup.stop()
    took = time.monotonic() - started
    assert gone(pid) and sup.pid is None and not sup.ready
    await until("grandchild gone", lambda: gone(grandchild), 1.0)  # it dies when next scheduled
    grace = server.command.stop_grace_s
    if ignore_term:
        assert grace <= took < grace + 1.0
    else:
        assert took < grace
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "server-supervisor"]


async def test_a_one_shot_child_pauses_and_resumes_as_a_group(tmp_path: Path) -> None:
    """What the consolidator does with its child: signals reach its whole process group."""
    server = Server(tmp_path, GRANDCHILD="1")
    child = await Child.spawn(server.command)
    await until("grandchild", (tmp_path / "grandchild").exists, 10)
    group = [child.pid, int((tmp_path / "grandchild").read_text())]

    def states() -> set[str]:
        return {Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] for p in group}

    assert child.signal(signal.SIGSTOP)
    await until("group stopped", lambda: states() == {"T"}, 5)
    assert child.signal(signal.SIGCONT)
    await until("group running", lambda: "T" not in states(), 5)
    assert await child.stop() == -signal.SIGTERM
    await until("group gone", lambda: all(gone(p) for p in group), 1.0)


async def test_private_redis_is_restarted_when_it_dies(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path)
    await redis.start()
    redis.supervise()
    client = connect(redis.url)
    try:
        assert await client.ping()
        pid = crash(redis)
        await until("restart", lambda: redis.restarts == 1 and redis.ready, 15)
        assert redis.pid not in (None, pid) and await client.ping()
    finally:
        await client.aclose()
        await redis.stop()
    assert gone(pid) and redis.pid is None and (redis.dir / "redis.log").stat().st_size > 0


async def test_managed_engine_reloads_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ManagedEngine's wiring, with the tiny server standing in for vLLM."""
    server = Server(tmp_path)
    monkeypatch.setattr(process, "vllm_command", lambda cfg, model_dir: server.command.argv)
    engine = ManagedEngine(EngineConfig(port=server.port, startup_timeout_s=10), tmp_path, tmp_path)
    on_ready = Counter()
    downs: list[bool] = []
    await engine.start()
    engine.supervise(on_ready, on_down=lambda: downs.append(engine.ready))
    try:
        assert engine.ready and await engine.client.healthy()
        crash(engine)
        await on_ready.reached(1, within_s=15)
        assert downs == [False]  # told once, as soon as it was found dead
        assert engine.ready and engine.restarts == 1 and await engine.client.healthy()
    finally:
        await engine.stop()
    assert engine.pid is None and (tmp_path / "vllm.log").exists()


async def always() -> bool:
    return True


async def test_child_log_is_rotated_while_it_runs(tmp_path: Path) -> None:
    """A child that keeps writing: its log stays near the limit, older parts kept as .1 .. .keep."""
    log_file = tmp_path / "child.log"
    writer = "import time\nwhile True:\n    print('x' * 999, flush=True)\n    time.sleep(0.001)\n"
    spec = ChildSpec(
        command=Command(
            name="chatty",
            argv=[sys.executable, "-c", writer],
            log_file=log_file,
            log_rotation=Rotation(max_bytes=20_000, keep=2),
        ),
        ready=Probe(always, every_s=0.05),
        live=Probe(always, every_s=0.05),
    )
    sup = Supervisor(spec)
    await sup.start()
    sup.supervise()
    try:
        await asyncio.sleep(1.5)
    finally:
        await sup.stop()
    rotated = sorted(p.name for p in tmp_path.iterdir())
    assert rotated == ["child.log", "child.log.1", "child.log.2"], rotated
    assert log_file.stat().st_size < 200_000  # without rotation: ~1 MB by now
    assert (tmp_path / "child.log.1").read_text().startswith("x" * 999)
