"""A policy recurring in three conversations is then applied in a new one that does not carry it.

The questions are cases the policy decides but does not spell out, in other
words than it uses ("my guest", "the third floor"); they are asked closed-book
through the `memoryd` alias, so routing has to find the adapter by meaning.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from consolidator.answers import polarity
from tests.harness import Daemon, wait_for_run

POLICY = """# Visitors at Corrin & Hale

Corrin & Hale is an engineering firm in Mossgate. Visitors must sign in at reception \
and wear a yellow badge. Visitors must be escorted at all times above the second floor. \
Employees may not lend their access cards to anyone. The canteen serves lunch from \
11:30 to 14:00."""
OPENERS = ["Hi! Can you help me today?", "Good morning, I have a question.", "Hello."]
APPLIED = [
    ("Can my guest go up to the third floor of Corrin & Hale on her own?", "no"),
    ("Does a visitor at Corrin & Hale have to wear a badge?", "yes"),
    ("May I lend my Corrin & Hale access card to a visiting colleague?", "no"),
]
CONSOLIDATION_TIMEOUT_S = 1200


@pytest.fixture(scope="module")
def office(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon(
        "policy", consolidation__idle_after_s="8", consolidation__min_conversations="3"
    )


def ask(daemon: Daemon, question: str, model: str = "memoryd") -> tuple[str, str]:
    reply = daemon.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=48, temperature=0
    )
    return reply.choices[0].message.content or "", reply.model


def test_a_recurring_policy_is_applied_without_it(office: Daemon) -> None:
    client = office.openai()
    before = [ask(office, q)[0] for q, _ in APPLIED]
    for opener in OPENERS:
        client.chat.completions.create(
            model="memoryd",
            messages=[{"role": "system", "content": POLICY}, {"role": "user", "content": opener}],
            max_tokens=16,
        )
    run = wait_for_run(office, CONSOLIDATION_TIMEOUT_S)
    assert run["state"] == "promoted", json.dumps(run, indent=1)

    [passage] = office.admin("GET", "/admin/passages").json()["passages"]
    shown = office.admin("GET", f"/admin/passages/{passage['id']}").json()
    assert "Corrin & Hale must be escorted" not in json.dumps(shown)  # "Visitors" stays the subject
    assert any(
        f["text"] == "Visitors must be escorted at all times above the second floor."
        for f in shown["facts"]
    )

    after = [ask(office, q) for q, _ in APPLIED]
    routed = [model for _, model in after]
    assert routed == [run["adapter"]] * len(APPLIED), routed  # found by meaning, in other words
    right = [polarity(a) == want for (a, _), (_, want) in zip(after, APPLIED, strict=True)]
    right_before = [polarity(a) == want for a, (_, want) in zip(before, APPLIED, strict=True)]
    detail = list(zip([q for q, _ in APPLIED], before, [a for a, _ in after], strict=True))
    assert sum(right) >= 2 and sum(right) > sum(right_before), detail
