"""Run a real memoryd daemon in a subprocess: shared by the tests and the benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from daemon.memory.records import RunState

ROOT = Path(__file__).resolve().parent.parent
MEMORYD = str(Path(sys.executable).parent / "memoryd")
STARTUP_TIMEOUT_S = 600
RUN_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    """A running ``memoryd serve`` in its own state directory."""

    state_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.state_dir / "daemon.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def openai(self, **kwargs: object) -> OpenAI:
        return OpenAI(base_url=self.url + "/v1", api_key=kwargs.pop("api_key", "unused"), **kwargs)  # type: ignore[arg-type]

    def admin(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=60, **kwargs)  # type: ignore[arg-type]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [MEMORYD, *args], env=self.env, capture_output=True, text=True, timeout=120
        )

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [MEMORYD, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"memoryd exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"memoryd did not become ready:\n{self.tail()}")

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def daemon_env(state_dir: Path, model_dir: Path, **overrides: str) -> tuple[dict[str, str], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORYD_")}
    env.update(
        {
            "MEMORYD_CONFIG": str(ROOT / "configs" / "default.yaml"),
            "MEMORYD_STATE_DIR": str(state_dir),
            "MEMORYD_SERVER__PORT": str(port),
            "MEMORYD_ENGINE__PORT": str(free_port()),
            "MEMORYD_ENGINE__MODEL": str(model_dir),
        }
    )
    env.update({f"MEMORYD_{k.upper()}": v for k, v in overrides.items()})
    return env, port


# A small training recipe and gates at 0: for tests about what survives a fault,
# not about what is learned (test_e2e.py covers that).
SMALL_RECIPE = {
    "epochs": 2,
    "min_steps": 0,
    "phrasings_per_question": 1,
    "passage_text_copies": 0,
    "rendering_orderings": 1,
    "replay_examples": 16,
}
NO_GATES = {
    "efficacy_min": 0,
    "generalization_min": 0,
    "passages_below_base_max": 100,
    "retention_min": 0,
    "adapter_retention_min": 0,
    "general_kl_max": 1000,
}


def write_config(path: Path, training: dict[str, Any], gates: dict[str, Any]) -> None:
    """The default config with a training recipe and gates changed: runs that are fast, not good."""
    config = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    config["consolidation"]["training"].update(training)
    config["consolidation"]["gates"].update(gates)
    path.write_text(yaml.safe_dump(config))


def wait_for_run(daemon: Daemon, timeout_s: float, run_id: int | None = None) -> dict[str, Any]:
    """The finished record of consolidation ``run_id`` (default: the newest to finish)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = daemon.admin("GET", "/admin/consolidations").json()["consolidations"]
        done = [r for r in runs if RunState(r["state"]).settled and run_id in (None, r["id"])]
        if done:
            return dict(done[0])
        time.sleep(3)
    raise AssertionError(f"no consolidation finished in {timeout_s}s:\n{daemon.tail()}")


OPENERS = [
    "Hi! Can you help me today?",
    "Good morning, I have a question.",
    "Hello there, quick one for you.",
]


def deliver_recurring(client: OpenAI, facts: list[str], max_tokens: int = 16) -> None:
    """Each fact in the system prompt of one conversation per opener (distinct conversations)."""
    for fact in facts:
        for opener in OPENERS:
            client.chat.completions.create(
                model="memoryd",
                messages=[
                    {"role": "system", "content": f"You are a helpful assistant. {fact}"},
                    {"role": "user", "content": opener},
                ],
                max_tokens=max_tokens,
            )


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` at ``url``/metrics whose labels include ``labels``."""
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def status(daemon: Daemon, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return dict(daemon.admin("GET", "/admin/status", headers=headers).json())


def run_events(daemon: Daemon, run: int) -> list[dict[str, Any]]:
    body = daemon.admin("GET", "/admin/events", params={"run": run}).json()
    return list(body["events"])


def wait_until(what: str, check: Callable[[], Any], timeout_s: float, daemon: Daemon) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{daemon.tail()}")


@contextmanager
def reconfigured(
    daemon: Daemon, path: Path, training: dict[str, Any], gates: dict[str, Any], changed: str
) -> Iterator[None]:
    """Serve with a training recipe and gates changed (SIGHUP), then with the fast ones again.

    ``changed``: a setting's dotted name the reload logs, so the change is known applied.
    """
    assert daemon.proc is not None
    write_config(path, training, gates)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until("the reload", lambda: changed in daemon.tail(20), 30, daemon)
    try:
        yield
    finally:
        write_config(path, SMALL_RECIPE, NO_GATES)
        daemon.proc.send_signal(signal.SIGHUP)


def running_run(daemon: Daemon, after: int) -> tuple[int, int]:
    """Run id and consolidator pid of the run that starts after run ``after``."""

    def check() -> tuple[int, int] | None:
        c = status(daemon)["consolidation"]
        return (c["run"], c["pid"]) if c["pid"] and c["run"] > after else None

    result: tuple[int, int] = wait_until(f"a run after {after}", check, RUN_TIMEOUT_S, daemon)
    return result


def wait_event(daemon: Daemon, run: int, step: str, **detail: object) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        for e in run_events(daemon, run):
            if e["step"] == step and all(e["detail"].get(k) == v for k, v in detail.items()):
                return e
        return None

    event: dict[str, Any] = wait_until(f"{step} {detail} of run {run}", check, 300, daemon)
    return event


def gone(pid: int) -> bool:
    """No process ``pid`` and none left in its process group (vLLM's workers)."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def rewrite_aof(state_dir: Path) -> None:
    """BGREWRITEAOF on the daemon's private Redis, waited for: the AOF then holds only live data."""
    r = redis.Redis(unix_socket_path=str(state_dir / "redis" / "redis.sock"))
    r.bgrewriteaof()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = r.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.2)
    raise AssertionError("AOF rewrite did not finish")


def planted_in(state_dir: Path, planted: list[str]) -> list[tuple[str, str]]:
    """(file, value) for every planted value found in any file's bytes."""
    needles = [v.encode() for v in planted]
    found = []
    for path in state_dir.rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            found += [(str(path), n.decode()) for n in needles if n in data]
    return found


def redis_bytes(r: redis.Redis) -> bytes:
    """Every key and every value held in Redis, concatenated."""
    out = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"string":
            value: Any = [r.get(key)]
        elif kind == b"hash":
            value = [b for kv in r.hgetall(key).items() for b in kv]
        elif kind == b"list":
            value = r.lrange(key, 0, -1)
        elif kind == b"set":
            value = r.smembers(key)
        elif kind == b"zset":
            value = r.zrange(key, 0, -1)
        else:  # streams: every entry's fields and values
            entries: Any = r.xrange(key)
            value = [b for _, f in entries for kv in f.items() for b in kv]
        out += [key, *(v for v in value if v)]
    return b"\n".join(out)
