"""Segmentation, normalization and redaction: what reaches Redis from a context."""

from __future__ import annotations

import pytest

from daemon.config import ObserverConfig
from daemon.memory.observer import conversation_key, observe
from daemon.memory.redact import redact
from daemon.memory.segment import fact_id, segment
from daemon.memory.statement import Statement, relation


def seg(text: str) -> list[str]:
    return segment(text, min_chars=10, max_chars=400)


def test_prose_splits_into_sentences() -> None:
    assert seg("The office is in Leeds. Dr. Amara Osei runs it. Is it open?") == [
        "The office is in Leeds.",
        "Dr. Amara Osei runs it.",
    ]


def test_lists_tables_quotes_and_code() -> None:
    text = """# Team
- Alice Moreau leads the storage team.
* Bob Tanaka owns the billing service.

| Service | Owner |
|---------|-------|
| search  | Carol Diaz |

> The release train leaves every second Tuesday.

```python
password_hash = compute_something_long(value)
```
"""
    assert seg(text) == [
        "Alice Moreau leads the storage team.",
        "Bob Tanaka owns the billing service.",
        "Service: search; Owner: Carol Diaz",
        "The release train leaves every second Tuesday.",
    ]


def test_normalized_forms_share_an_id() -> None:
    assert fact_id("The  office is in Leeds.") == fact_id("the office is in leeds")
    assert fact_id("Ｔhe office is in Leeds.") == fact_id("The office is in Leeds.")  # NFKC
    assert fact_id("The office is in Leeds.") != fact_id("The office is in York.")


def test_instructions_to_the_assistant_are_not_facts() -> None:
    assert seg("You are a helpful assistant. Your name is Ada. The depot is in Hull.") == [
        "The depot is in Hull."
    ]


def test_too_short_and_too_long_are_skipped() -> None:
    assert segment("Tiny. " + "A" * 50 + ".", min_chars=10, max_chars=30) == []


@pytest.mark.parametrize(
    ("text", "kind", "secret"),
    [
        (
            "Use the key sk-proj-abcdefghijklmnop12345 for tests.",
            "api_key",
            "sk-proj-abcdefghijklmnop12345",
        ),
        (
            "Token ghp_abcdefghijklmnopqrstuvwxyz0123456789 is mine.",
            "api_key",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        ),
        ("AWS key AKIAIOSFODNN7EXAMPLE is old.", "api_key", "AKIAIOSFODNN7EXAMPLE"),
        (
            "Send Authorization: Bearer abcdef0123456789abcdef0123.",
            "token",
            "abcdef0123456789abcdef0123",
        ),
        (
            "The session is eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijk now.",
            "token",
            "eyJhbGciOiJIUzI1NiJ9",
        ),
        ("The admin password is hunter2secret.", "password", "hunter2secret"),
        ("Mail jane.doe@example.com about it.", "email", "jane.doe@example.com"),
        ("Call +44 20 7946 0958 tomorrow.", "phone", "7946 0958"),
        ("Card 4111 1111 1111 1111 was used.", "card", "4111 1111 1111 1111"),
    ],
)
def test_each_secret_kind_is_redacted(text: str, kind: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out


def test_ordinary_numbers_survive() -> None:
    text = "The bridge opened in 1932 and is 503 metres long."
    assert redact(text) == text


def test_observe_takes_context_and_question() -> None:
    messages = [
        {
            "role": "system",
            "content": "Our support line opens at nine. Mail help@corp.example for refunds.",
        },
        {"role": "user", "content": "Hi there, I need some help please."},
        {"role": "assistant", "content": "Sure, the support line opens at nine."},
        {"role": "user", "content": "When does support open?"},
    ]
    obs = observe(messages, "c1", ObserverConfig(min_chars=10))
    texts = [t for _, t in obs.facts]
    assert texts == [
        "Our support line opens at nine.",
        "Mail [REDACTED:email] for refunds.",
        "Hi there, I need some help please.",
    ]
    assert obs.question == "When does support open?"


def test_a_long_last_message_is_pasted_context() -> None:
    pasted = "Please summarise this. " + "The Orla Bridge opened in 1931. " * 2 + "x" * 300
    obs = observe([{"role": "user", "content": pasted}], "c2", ObserverConfig(min_chars=10))
    assert obs.question is None
    assert "The Orla Bridge opened in 1931." in [t for _, t in obs.facts]


def test_conversation_key_is_stable_as_history_grows() -> None:
    first = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hello"}]
    later = [*first, {"role": "assistant", "content": "Hi"}, {"role": "user", "content": "More"}]
    other = [{"role": "system", "content": "S"}, {"role": "user", "content": "Different"}]
    assert conversation_key(first, None) == conversation_key(later, None)
    assert conversation_key(first, None) != conversation_key(other, None)
    assert conversation_key(first, "abc") == "id:abc"


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("The capital of Zorvath is Quillmere.", "the capital of Zorvath is Quillmere", "same"),
        ("The capital of the planet Zorvath is Quillmere.", "The capital of Zorvath is Quillmere.", "same"),
        ("The capital of Zorvath is Quillmere.", "The capital of Zorvath was Quillmere!", "same"),
        ("The chief engineer of the starship Calyx is Dana Okonkwo.", "The chief engineer of the Calyx is Dana Okonkwo.", "same"),
        ("The drink of the Velmora Festival is mintberry tea.", "The drink of the Velmora Festival is iced mintberry tea.", "same"),
        ("The capital of Zorvath is Quillmere.", "The capital of Zorvath is Brightwater.", "contradicts"),
        ("The chief engineer of the Calyx is Dana Okonkwo.", "The chief engineer of the Calyx is Priya Raman.", "contradicts"),
        ("The drink of the Velmora Festival is mintberry tea.", "The drink of the Velmora Festival is lemon soda.", "contradicts"),
        ("The depot is open on Sundays.", "The depot is not open on Sundays.", "contradicts"),
        ("The depot opens on Sundays.", "The depot never opens on Sundays.", "different"),
        ("The capital of Zorvath is Quillmere.", "The capital of Zorvath is a port city.", "different"),
        ("The capital of Zorvath is Quillmere.", "The capital of Veltria is Quillmere.", "different"),
        ("The depot closes at 5 pm on Sundays.", "The depot closes at 6 pm on Sundays.", "different"),
        ("The ferry to Port Elsmere leaves from pier eleven.", "The harbour master of Port Elsmere is Ines Marlowe.", "different"),
    ],
)  # fmt: skip
def test_statement_relations(a: str, b: str, expected: str) -> None:
    assert relation(Statement.of(a), Statement.of(b)) == expected
    assert relation(Statement.of(b), Statement.of(a)) == expected
