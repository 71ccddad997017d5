"""What must not be kept is not: a real daemon, real HTTP, every file of its state dir grepped.

Opted-out requests (``X-Memoryd-Learn: off`` or ``"memoryd": {"learn": false}``)
leave no trace; ``X-Conversation-Id`` names a conversation and ``user`` does not.

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
from typing import Any

import pytest
import redis

from tests.harness import OPENERS, Daemon, metric, planted_in, redis_bytes, rewrite_aof
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


def observed(daemon: Daemon) -> int:
    return int(daemon.admin("GET", "/admin/status").json()["observer"]["observed"])


def chat(daemon: Daemon, system: str, question: str = "Hello?", **kwargs: Any) -> None:
    daemon.openai().chat.completions.create(
        model="memoryd",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=2,
        **kwargs,
    )


def test_opted_out_requests_leave_no_trace(daemon: Daemon) -> None:
    header_only = "The Quillfeather vault opens with the brass Tamsinwick lever."
    body_only = "The Orrindale ferry carries the Vexmoor lanterns each spring."
    before = observed(daemon)
    chat(daemon, header_only, "Where is Tamsinwick?", extra_headers={"X-Memoryd-Learn": "off"})
    chat(daemon, body_only, "Where is Vexmoor?", extra_body={"memoryd": {"learn": False}})
    # The queue is first in, first out: once this one is written, the two before it were handled.
    chat(daemon, "The Kettlewick mill grinds barley for the Harlow bakery.")
    wait_observed(daemon, before + 1)
    assert observed(daemon) == before + 1
    r = redis.Redis(unix_socket_path=str(daemon.state_dir / "redis" / "redis.sock"))
    dump = redis_bytes(r)
    assert b"Kettlewick" in dump  # the learning request is there, so the search can find
    for word in (b"Quillfeather", b"Tamsinwick", b"Orrindale", b"Vexmoor"):
        assert word not in dump
    rewrite_aof(daemon.state_dir)
    assert (
        planted_in(daemon.state_dir, ["Quillfeather", "Tamsinwick", "Orrindale", "Vexmoor"]) == []
    )


def test_a_bad_extension_is_refused(daemon: Daemon) -> None:
    response = daemon.admin(
        "POST",
        "/v1/chat/completions",
        json={"model": "memoryd", "messages": [{"role": "user", "content": "Hi"}],
              "memoryd": {"learn": "sometimes"}},
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith("memoryd")


def passage_conversations(daemon: Daemon, word: str) -> int:
    passages = daemon.admin("GET", "/admin/passages?limit=1000").json()["passages"]
    return int(next(p["conversations"] for p in passages if word in p["text"]))


def test_conversation_id_header_names_conversations_and_user_does_not(daemon: Daemon) -> None:
    named = "The Brindlecombe observatory maps comets for the Ossery guild."
    before = observed(daemon)
    for conversation in ("c-1", "c-2", "c-2"):
        chat(daemon, named, extra_headers={"X-Conversation-Id": conversation})
    by_user = "The Dunmarrow quarry ships slate to the Pellow yards."
    for user in ("alice", "bob"):
        chat(daemon, by_user, user=user)
    wait_observed(daemon, before + 5)
    assert passage_conversations(daemon, "Brindlecombe") == 2
    # Same history from two end users: one derived conversation, not two.
    assert passage_conversations(daemon, "Dunmarrow") == 1
