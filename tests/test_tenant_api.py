"""Tenants through the daemon's HTTP API and CLI, against the scripted stand-in engine.

No vLLM and no training here (tests/test_tenants.py has those): which tenant a
key or token names, memory observed per tenant, an opted-out tenant, admin
scoping and its refusals in OpenAI's error format, the CLI's ``--tenant``,
and a wipe of a tenant's memory down to the last byte of the state directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml

from daemon.scope import user_scope
from tests.harness import ROOT, Daemon, planted_in, redis_bytes, rewrite_aof
from tests.test_conventions import engine  # noqa: F401 (the scripted stand-in, a fixture)

OPERATOR = "op-token"
TENANTS = {
    "acme": {"api_keys": ["acme-key"], "admin_token": "acme-admin"},
    "globex": {"api_keys": ["globex-key"]},
    "quiet": {"api_keys": ["quiet-key"], "learn": False},
    "initech": {"api_keys": ["initech-key"], "admin_token": "initech-admin", "per_user": True},
}
USERS = {  # initech's end users, each with memory of its own
    "ana@initech.example": "The Corvane printer on floor nine jams on envelopes.",
    "bo-7731": "The Halloway badge reader opens the loading dock after six.",
}
TEXT = {
    "acme": "The Tarrowind depot ships copper to the Ellisandre foundry every Monday.",
    "globex": "The Tarrowind depot ships copper to the Brummock foundry every Friday.",
    "quiet": "The Quorrimund archive is kept by the Lessaby order in Vantry Hollow.",
}


@pytest.fixture(scope="module")
def daemon(
    make_daemon: Callable[..., Daemon],
    engine: str,  # noqa: F811 (the fixture imported above)
    tmp_path_factory: pytest.TempPathFactory,
) -> Daemon:
    config = tmp_path_factory.mktemp("tenant-api") / "memoryd.yaml"
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    data["server"]["admin_token"] = OPERATOR
    data["tenants"] = TENANTS
    config.write_text(yaml.safe_dump(data))
    return make_daemon(
        "tenant-api",
        extra_env={"MEMORYD_CONFIG": str(config)},
        engine__upstreams=json.dumps([engine]),
        consolidation__idle_after_s="100000",
    )


def admin(
    daemon: Daemon, method: str, path: str, token: str = OPERATOR, **params: str
) -> httpx.Response:
    return daemon.admin(
        method, path, headers={"Authorization": f"Bearer {token}"}, params=params or None
    )


def send(daemon: Daemon, tenant: str, conversations: int = 3) -> None:
    client = daemon.openai(api_key=f"{tenant}-key")
    for n in range(conversations):
        client.chat.completions.create(
            model="memoryd",
            messages=[
                {"role": "system", "content": TEXT[tenant]},
                {"role": "user", "content": f"Question {n}: when does the depot ship?"},
            ],
            max_tokens=2,
        )


def observed(daemon: Daemon, n: int) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        observer: dict[str, Any] = admin(daemon, "GET", "/admin/status").json()["observer"]
        if observer["observed"] >= n and not observer["queued"]:
            return observer
        time.sleep(0.3)
    raise AssertionError(f"{n} observations not written:\n{daemon.tail()}")


def socket_of(daemon: Daemon) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(daemon.state_dir / "redis" / "redis.sock"))


def test_each_key_feeds_its_own_tenant_and_quiet_feeds_none(daemon: Daemon) -> None:
    with pytest.raises(openai.AuthenticationError):
        daemon.openai(api_key="nobody").models.list()
    for tenant in ("quiet", "acme", "globex"):
        send(daemon, tenant)
    observer = observed(daemon, 6)
    assert observer["observed"] == 6  # quiet's three were never queued
    dump = redis_bytes(socket_of(daemon))
    assert b"Ellisandre" in dump and b"Brummock" in dump
    assert b"Quorrimund" not in dump and b"memoryd:t:quiet" not in dump
    assert list(socket_of(daemon).scan_iter(match="memoryd:passage*")) == []
    for tenant, own, other in (
        ("acme", "Ellisandre", "Brummock"),
        ("globex", "Brummock", "Ellisandre"),
    ):
        facts = admin(daemon, "GET", "/admin/facts", tenant=tenant).json()["facts"]
        assert own in str(facts) and other not in str(facts)
        assert {f["status"] for f in facts} == {"pending"}  # neither replaced the other's


def test_admin_scope_follows_the_token(daemon: Daemon) -> None:
    own = admin(daemon, "GET", "/admin/passages", "acme-admin").json()
    assert "Ellisandre" in str(own) and "Brummock" not in str(own)
    refused = admin(daemon, "GET", "/admin/passages", "acme-admin", tenant="globex")
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "message": "this token is tenant acme's, not globex's",
        "type": "invalid_request_error",
        "param": None,
        "code": "tenant_forbidden",
    }
    header = daemon.admin(
        "GET",
        "/admin/facts",
        headers={"Authorization": f"Bearer {OPERATOR}", "X-Memoryd-Tenant": "globex"},
    )
    assert "Brummock" in header.text and "Ellisandre" not in header.text
    assert admin(daemon, "GET", "/admin/facts", "wrong").status_code == 403
    assert admin(daemon, "GET", "/admin/facts", tenant="nobody").json()["error"]["code"] == (
        "tenant_not_found"
    )
    assert [
        t["name"] for t in admin(daemon, "GET", "/admin/tenants", "acme-admin").json()["tenants"]
    ] == ["acme"]
    everyone = admin(daemon, "GET", "/admin/tenants").json()["tenants"]
    assert {t["name"]: t["passages"] for t in everyone} == {
        "default": 0,
        "acme": 1,
        "globex": 1,
        "quiet": 0,
        "initech": 0,
    }
    assert admin(daemon, "POST", "/admin/tenants/globex/wipe", "acme-admin").status_code == 403
    status = admin(daemon, "GET", "/admin/status", "acme-admin").json()
    assert status["tenant"] == "acme" and status["passages"] == 1


def test_cli_takes_a_tenant(daemon: Daemon) -> None:
    shown = daemon.cli("--tenant", "globex", "passages", "list", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "Brummock" in shown.stdout and "Ellisandre" not in shown.stdout
    listed = daemon.cli("tenant", "list")
    assert listed.returncode == 0 and "globex" in listed.stdout, listed.stderr
    missing = daemon.cli("--tenant", "nobody", "facts", "list")
    assert missing.returncode == 1 and "no tenant nobody" in missing.stderr


def test_wipe_leaves_no_byte_of_the_tenant(daemon: Daemon) -> None:
    refused = admin(daemon, "POST", "/admin/tenants/default/wipe")
    assert refused.status_code == 400
    wiped = daemon.cli("tenant", "wipe", "globex", "--yes", "--json")
    assert wiped.returncode == 0, wiped.stderr
    assert json.loads(wiped.stdout)["keys"] > 0
    assert list(socket_of(daemon).scan_iter(match="memoryd:t:globex:*")) == []
    rewrite_aof(daemon.state_dir)
    assert planted_in(daemon.state_dir, ["Brummock", "memoryd:t:globex"]) == []
    assert "Ellisandre" in admin(daemon, "GET", "/admin/facts", tenant="acme").text
    # Wiped is empty, not gone: the tenant is still configured and learns again.
    send(daemon, "globex", 1)
    observed(daemon, 7)
    assert "Brummock" in admin(daemon, "GET", "/admin/passages", tenant="globex").text


def test_models_are_the_callers_own(daemon: Daemon) -> None:
    ids = [m.id for m in daemon.openai(api_key="acme-key").models.list().data]
    assert ids == ["memoryd", "base"]
    with pytest.raises(openai.NotFoundError):
        daemon.openai(api_key="acme-key").chat.completions.create(
            model="mem-globex-v1", messages=[{"role": "user", "content": "x"}], max_tokens=1
        )


def test_state_dir_has_no_tenant_dirs_without_runs(daemon: Daemon) -> None:
    assert not (Path(daemon.state_dir) / "tenants" / "globex").exists()


def test_each_end_user_of_a_per_user_tenant_has_memory_of_its_own(daemon: Daemon) -> None:
    before = admin(daemon, "GET", "/admin/status").json()["observer"]["observed"]
    client = daemon.openai(api_key="initech-key")
    asked = [*USERS.items(), (None, "The Initech cafeteria closes at three on Fridays.")]
    for user, text in asked:
        client.chat.completions.create(
            model="memoryd",
            messages=[
                {"role": "system", "content": text},
                {"role": "user", "content": "Anything I should know?"},
            ],
            max_tokens=2,
            user=user or openai.omit,
        )
    observed(daemon, before + len(asked))
    scopes = {user: user_scope("initech", user) for user in USERS}
    listed = [t["name"] for t in admin(daemon, "GET", "/admin/tenants").json()["tenants"]]
    assert set(scopes.values()) < set(listed)
    for user, scope in scopes.items():
        facts = admin(daemon, "GET", "/admin/facts", "initech-admin", tenant=scope).text
        assert USERS[user] in facts
        assert all(other not in facts for u, other in USERS.items() if u != user)
    own = admin(daemon, "GET", "/admin/facts", "initech-admin", tenant="initech").text
    assert "cafeteria" in own and "Corvane" not in own and "Halloway" not in own
    other = admin(daemon, "GET", "/admin/facts", "acme-admin", tenant=scopes["bo-7731"])
    assert other.status_code == 403
    # The user's name is hashed, never stored.
    assert b"ana@initech.example" not in redis_bytes(socket_of(daemon))

    # A restarted daemon finds the users' scopes in Redis.
    daemon.stop()
    daemon.start()
    listed = [t["name"] for t in admin(daemon, "GET", "/admin/tenants").json()["tenants"]]
    assert set(scopes.values()) < set(listed)

    # Wiping the tenant wipes its users' scopes too.
    wiped = admin(daemon, "POST", "/admin/tenants/initech/wipe")
    assert wiped.status_code == 200 and wiped.json()["users"] == 2, wiped.text
    rewrite_aof(daemon.state_dir)
    assert (
        planted_in(daemon.state_dir, ["Corvane", "Halloway", "cafeteria", "memoryd:t:initech"])
        == []
    )
