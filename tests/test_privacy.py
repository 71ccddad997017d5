"""What must not be kept is not: a real daemon, real HTTP, every file of its state dir grepped.

An ops-notes system prompt carrying 24 kinds of secrets and personal data is
sent in three conversations (with one more in a user question). After the
observations are written and Redis has rewritten its append-only file, no
file under the state directory (Redis data, logs, adapters) holds any
planted value, the statements that were about a secret are not facts, and
the operator sees how many values were redacted, by kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.harness import OPENERS, Daemon, metric
from tests.secret_corpus import FACTS, OPS_NOTES, PLANTED, values

QUESTION = "I am priya.raman@northwind-ops.example; which region does staging run in?"


@pytest.fixture(scope="module")
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon("privacy")


def wait_observed(daemon: Daemon, n: int, timeout_s: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        observer = daemon.admin("GET", "/admin/status").json()["observer"]
        if observer["observed"] + observer["failed"] >= n and not observer["queued"]:
            return dict(observer)
        time.sleep(0.3)
    raise AssertionError(f"{n} observations not written:\n{daemon.tail()}")


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


def test_planted_secrets_leave_no_byte_in_the_state_dir(daemon: Daemon) -> None:
    client = daemon.openai()
    for opener in OPENERS:
        client.chat.completions.create(
            model="memoryd",
            messages=[
                {"role": "system", "content": OPS_NOTES},
                {"role": "user", "content": opener},
            ],
            max_tokens=4,
        )
    client.chat.completions.create(
        model="memoryd",
        messages=[{"role": "system", "content": OPS_NOTES}, {"role": "user", "content": QUESTION}],
        max_tokens=4,
    )
    observer = wait_observed(daemon, len(OPENERS) + 1)
    assert observer["failed"] == 0
    assert observer["redacted"] >= 4 * len(PLANTED)
    # Three planted lines ("aws_secret_access_key = ...") are not sentences: nothing to drop.
    assert observer["statements_dropped"] >= len(PLANTED) - 3

    facts = daemon.admin("GET", "/admin/facts?limit=1000").json()["facts"]
    texts = [f["text"] for f in facts]
    assert not [t for t in texts if "REDACTED" in t], texts
    assert all(any(fact == t for t in texts) for fact in FACTS), texts
    passages = daemon.admin("GET", "/admin/passages?limit=100").json()["passages"]
    assert [p["redacted"] for p in passages] == [len(PLANTED)]
    assert QUESTION not in str(passages)

    status = daemon.admin("GET", "/admin/status").json()
    assert status["redacted"]["ssn"] >= 4 and status["redacted"]["password"] >= 4
    assert metric(daemon.url, "memoryd_redactions_total") == observer["redacted"]
    shown = daemon.cli("status")
    assert shown.returncode == 0 and "ssn" in shown.stdout, shown.stderr

    rewrite_aof(daemon.state_dir)
    assert planted_in(daemon.state_dir, values()) == []
