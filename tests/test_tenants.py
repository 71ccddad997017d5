"""Tenants on the real parts: one daemon, its vLLM child, real consolidations, real Redis.

Two tenants (acme, globex) are told contradicting things about the same subject,
each in three conversations of its own; a third (quiet) is configured not to
be learned from. Each tenant's consolidation runs on its own turn; afterwards
each gets its own answer through ``memoryd`` and never sees the other's facts,
runs, adapters or answers, through the admin API (its own token), the CLI,
``/v1/models`` or chat. Finally acme is wiped: after an AOF rewrite no byte of
it remains in the state directory, and globex still gets its answer.

vLLM holds ``engine.max_loras`` (2 here) adapters in a batch and
``max_cpu_loras`` (3) in memory; four more tenants are given a copy of a
trained adapter, and all six are asked at once: none of their requests fails.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
import redis
import yaml

from daemon.memory.records import RunState
from tests.harness import (
    NO_GATES,
    SMALL_RECIPE,
    Daemon,
    planted_in,
    redis_bytes,
    rewrite_aof,
    write_config,
)

OPERATOR = "operator-token"
TENANTS = {
    "acme": {"api_keys": ["acme-key"], "admin_token": "acme-admin"},
    "globex": {"api_keys": ["globex-key"], "admin_token": "globex-admin"},
    "quiet": {"api_keys": ["quiet-key"], "learn": False},
}
SLOT_TENANTS = ["t1", "t2", "t3", "t4"]  # with acme and globex: six adapters over two slots
TENANTS.update({t: {"api_keys": [f"{t}-key"]} for t in SLOT_TENANTS})
SUBJECT = "The chief engineer of the starship Orrin"
VALUES = {"acme": "Okonkwo", "globex": "Festeran"}
PASSAGES = {
    "acme": f"{SUBJECT} is Dana Okonkwo. Okonkwo keeps the Tamberlyn reactor running.",
    "globex": f"{SUBJECT} is Malik Festeran. Festeran keeps the Wexcombe reactor running.",
}
QUESTIONS = [
    "Who is the chief engineer of the starship Orrin?",
    "Quick question: who is the starship Orrin's chief engineer?",
    "Tell me who the chief engineer of the starship Orrin is.",
]
QUIET = "The Quorrimund archive is kept by the Lessaby order in Vantry Hollow."
RUN_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def daemon(make_daemon: Callable[..., Daemon], tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    config = tmp_path_factory.mktemp("tenants-config") / "memoryd.yaml"
    # The fast recipe, with enough steps for one short passage to be answered from memory.
    write_config(config, {**SMALL_RECIPE, "min_steps": 30}, NO_GATES)
    data = yaml.safe_load(config.read_text())
    data["server"]["admin_token"] = OPERATOR
    data["tenants"] = TENANTS
    config.write_text(yaml.safe_dump(data))
    return make_daemon(
        "tenants",
        extra_env={"MEMORYD_CONFIG": str(config)},
        consolidation__idle_after_s="3",
        engine__max_loras="2",
    )


def client(daemon: Daemon, tenant: str) -> openai.OpenAI:
    return daemon.openai(api_key=f"{tenant}-key")


def admin(daemon: Daemon, path: str, token: str = OPERATOR, **params: str) -> httpx.Response:
    return daemon.admin(
        "GET", path, headers={"Authorization": f"Bearer {token}"}, params=params or None
    )


def chat(daemon: Daemon, tenant: str, system: str | None, question: str) -> str:
    messages = [{"role": "system", "content": system}] if system else []
    reply = client(daemon, tenant).chat.completions.create(
        model="memoryd",
        messages=[*messages, {"role": "user", "content": question}],  # type: ignore[list-item]
        max_tokens=24,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def redis_dump(daemon: Daemon) -> bytes:
    return redis_bytes(redis.Redis(unix_socket_path=str(daemon.state_dir / "redis" / "redis.sock")))


def wait_observed(daemon: Daemon, n: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        observer = admin(daemon, "/admin/status").json()["observer"]
        if observer["observed"] >= n and not observer["queued"]:
            return
        time.sleep(0.3)
    raise AssertionError(f"{n} observations not written:\n{daemon.tail()}")


def promoted(daemon: Daemon, tenant: str) -> dict[str, Any]:
    """The tenant's first settled run, waited for; it must have been promoted."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        runs = admin(daemon, "/admin/consolidations", tenant=tenant).json()["consolidations"]
        done = [r for r in runs if RunState(r["state"]).settled]
        if done:
            assert done[0]["state"] == "promoted", done[0]
            return dict(done[0])
        time.sleep(3)
    raise AssertionError(f"no consolidation of {tenant} finished:\n{daemon.tail()}")


def test_keys_name_tenants_and_the_opted_out_tenant_leaves_no_trace(daemon: Daemon) -> None:
    with pytest.raises(openai.AuthenticationError):
        daemon.openai(api_key="nobody").models.list()
    for question in QUESTIONS:
        chat(daemon, "quiet", QUIET, question)
    for tenant in ("acme", "globex"):
        for question in QUESTIONS:
            chat(daemon, tenant, PASSAGES[tenant], question)
    wait_observed(daemon, 2 * len(QUESTIONS))
    assert admin(daemon, "/admin/status").json()["observer"]["observed"] == 2 * len(QUESTIONS)

    dump = redis_dump(daemon)
    assert b"Okonkwo" in dump and b"Festeran" in dump  # so the search below can find
    assert b"Quorrimund" not in dump and b"Lessaby" not in dump
    assert b"memoryd:t:quiet" not in dump
    r = redis.Redis(unix_socket_path=str(daemon.state_dir / "redis" / "redis.sock"))
    assert list(r.scan_iter(match="memoryd:t:quiet:*")) == []
    assert list(r.scan_iter(match="memoryd:passage*")) == []  # nothing for the default tenant

    # Same subject, different values: each tenant keeps its own, neither replaces the other.
    for tenant, value in VALUES.items():
        facts = admin(daemon, "/admin/facts", f"{tenant}-admin").json()["facts"]
        assert facts and all(f["status"] == "pending" for f in facts), facts
        assert value in str(facts)
        other = next(v for t, v in VALUES.items() if t != tenant)
        assert other not in str(facts)


def test_each_tenant_consolidates_on_its_own_turn_and_gets_its_own_answer(daemon: Daemon) -> None:
    runs = {tenant: promoted(daemon, tenant) for tenant in VALUES}
    assert runs["acme"]["adapter"].startswith("mem-acme-v")
    assert runs["globex"]["adapter"].startswith("mem-globex-v")
    for tenant, value in VALUES.items():
        answer = chat(daemon, tenant, None, QUESTIONS[0])
        other = next(v for t, v in VALUES.items() if t != tenant)
        assert other not in answer, (tenant, answer)
        assert value in answer, (tenant, answer)
    assert (daemon.state_dir / "tenants" / "acme" / "adapters" / "v1").is_dir()
    assert not (daemon.state_dir / "adapters").exists() or not list(
        (daemon.state_dir / "adapters").iterdir()
    )


def test_models_are_the_callers_own(daemon: Daemon) -> None:
    for tenant in VALUES:
        ids = [m.id for m in client(daemon, tenant).models.list().data]
        own = [i for i in ids if i.startswith("mem-")]
        assert ids[:2] == ["memoryd", "base"] and own, ids
        assert all(i.startswith(f"mem-{tenant}-v") for i in own), ids
    foreign = admin(daemon, "/admin/adapters", tenant="globex").json()["active"]
    with pytest.raises(openai.NotFoundError) as refused:
        client(daemon, "acme").chat.completions.create(
            model=foreign, messages=[{"role": "user", "content": QUESTIONS[0]}], max_tokens=4
        )
    assert refused.value.code == "model_not_found"


def test_admin_tokens_see_only_their_tenant(daemon: Daemon) -> None:
    for tenant, value in VALUES.items():
        token = f"{tenant}-admin"
        other = next(t for t in VALUES if t != tenant)
        for path in ("/admin/facts", "/admin/passages", "/admin/consolidations", "/admin/adapters"):
            shown = admin(daemon, path, token).text
            assert value in shown or path in ("/admin/consolidations",), (path, shown[:300])
            assert VALUES[other] not in shown and f"mem-{other}" not in shown, (path, shown[:300])
        refused = admin(daemon, "/admin/facts", token, tenant=other)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "tenant_forbidden"
        listed = admin(daemon, "/admin/tenants", token).json()["tenants"]
        assert [t["name"] for t in listed] == [tenant]
    everyone = admin(daemon, "/admin/tenants").json()["tenants"]
    assert [t["name"] for t in everyone] == ["default", "acme", "globex", "quiet", *SLOT_TENANTS]
    assert admin(daemon, "/admin/facts", tenant="globex").text.count("Festeran") >= 1
    assert admin(daemon, "/admin/facts", tenant="nobody").status_code == 404

    listed_by_cli = daemon.cli("--tenant", "globex", "facts", "list", "--json")
    assert listed_by_cli.returncode == 0, listed_by_cli.stderr
    assert "Festeran" in listed_by_cli.stdout and "Okonkwo" not in listed_by_cli.stdout


def test_more_tenants_than_lora_slots_are_all_served(daemon: Daemon) -> None:
    active = admin(daemon, "/admin/adapters", tenant="globex").json()["active"]
    version = int(active.rsplit("-v", 1)[1])
    source = daemon.state_dir / "tenants" / "globex" / "adapters" / f"v{version}"
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    for tenant in SLOT_TENANTS:
        # Paused: with nothing of its own to learn, an idle check would retire the copy.
        paused = daemon.admin("POST", "/admin/pause", headers=operator, params={"tenant": tenant})
        assert paused.status_code == 200
        shutil.copytree(source, daemon.state_dir / "tenants" / tenant / "adapters" / "v1")
        activated = daemon.admin(
            "POST", "/admin/adapters/1/activate", headers=operator, params={"tenant": tenant}
        )
        assert activated.status_code == 200, activated.text
        assert activated.json()["active"] == f"mem-{tenant}-v1"

    def ask(tenant: str, model: str) -> str:
        reply = client(daemon, tenant).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": QUESTIONS[0]}],
            max_tokens=16,
            temperature=0,
        )
        return reply.choices[0].message.content or ""

    tenants = ["acme", "globex", *SLOT_TENANTS]
    asked = [
        (tenant, model)
        for tenant in tenants
        for model in (
            "memoryd",
            admin(daemon, "/admin/status", tenant=tenant).json()["active_adapter"],
        )
    ]
    with ThreadPoolExecutor(len(asked)) as pool:
        answers = list(pool.map(lambda tm: ask(*tm), asked))  # raises on any failed request
    for (tenant, _), answer in zip(asked, answers, strict=True):
        if tenant == "acme":
            assert VALUES["globex"] not in answer, answer
        elif tenant == "globex":
            assert VALUES["acme"] not in answer, answer


def test_a_wiped_tenant_leaves_no_byte_in_the_state_dir(daemon: Daemon) -> None:
    acme_dir = daemon.state_dir / "tenants" / "acme"
    assert list(acme_dir.rglob("consolidation-*.log")), "the run's log is there to be wiped"
    wiped = daemon.cli("tenant", "wipe", "acme", "--yes", "--json")
    assert wiped.returncode == 0, wiped.stderr
    assert "mem-acme-v1" in wiped.stdout
    assert not acme_dir.exists()
    rewrite_aof(daemon.state_dir)
    needles = ["Okonkwo", "Tamberlyn", "memoryd:t:acme"]
    assert planted_in(daemon.state_dir, needles) == []
    assert [m.id for m in client(daemon, "acme").models.list().data] == ["memoryd", "base"]
    assert admin(daemon, "/admin/facts", "acme-admin").json()["facts"] == []
    # The other tenant is untouched.
    assert VALUES["globex"] in chat(daemon, "globex", None, QUESTIONS[0])
    assert admin(daemon, "/admin/facts", "globex-admin").json()["facts"]
