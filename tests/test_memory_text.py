"""Reading context: passages, statements with references resolved, redaction."""

from __future__ import annotations

from collections import Counter

import pytest

from daemon.memory.language import Language
from daemon.memory.observer import context_of, conversation_key
from daemon.memory.passages import split_passages, statements
from daemon.memory.redact import redact
from daemon.memory.segment import fact_id
from daemon.memory.statement import Statement, relation

LANG = Language()


def seg(text: str, min_chars: int = 10, max_chars: int = 400) -> list[str]:
    return [e.text for e in statements(LANG, text, min_chars, max_chars)]


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
    assert seg("Tiny. " + "A" * 50 + ".", min_chars=10, max_chars=30) == []


def test_references_are_resolved_from_the_passage() -> None:
    text = """# Odile Brenner

Odile Brenner is a Belgian glassmaker. She was born in 1949 in Vaux-le-Lac, where her
brother, Lucien Brenner, kept the ferry. He drowned in 1971.

The glassmaker opened her first workshop in 1975. Her best-known window, the Tern Rose,
hangs in Saint-Arnoul. It took her six years to finish it. In 2002 she was awarded the
Merlot Medal."""
    assert seg(text) == [
        "Odile Brenner is a Belgian glassmaker.",
        "Odile Brenner was born in 1949 in Vaux-le-Lac, where Odile Brenner's brother, "
        "Lucien Brenner, kept the ferry.",
        "Lucien Brenner drowned in 1971.",
        "Odile Brenner opened Odile Brenner's first workshop in 1975.",
        "Odile Brenner's best-known window, the Tern Rose, hangs in Saint-Arnoul.",
        "It took Odile Brenner six years to finish it.",
        "In 2002 Odile Brenner was awarded the Merlot Medal.",
    ]


def test_a_heading_names_the_topic_and_its_descriptions() -> None:
    # The small model parses "Tarrowmere is an island" with "island" as the subject; the
    # heading still names what "the island" is. "its" inside a relative clause is left alone.
    text = """# Tarrowmere — a guide

Tarrowmere is an island in the Gullstrand Sound. The island was settled around 1140. The
tenants formed the Commons Trust, which elects its board every four years."""
    assert seg(text) == [
        "Tarrowmere is an island in the Gullstrand Sound.",
        "Tarrowmere was settled around 1140.",
        "The tenants formed the Commons Trust, which elects its board every four years.",
    ]
    bio = "Odile Brenner is a Belgian glassmaker. The future glassmaker studied in Ghent."
    assert seg(bio)[1] == "Odile Brenner studied in Ghent."


def test_a_company_named_once_is_what_the_company_means() -> None:
    text = (
        "Harrow & Finch is a freight company based in Dunmore. The company reimburses travel "
        "within 30 days. Visitors must be escorted above the second floor."
    )
    assert seg(text) == [
        "Harrow & Finch is a freight company based in Dunmore.",
        "Harrow & Finch reimburses travel within 30 days.",
        "Visitors must be escorted above the second floor.",
    ]


def test_long_messages_split_into_sections() -> None:
    section = "The depot opens at nine on weekdays.\n\n" * 40
    text = f"# Depot\n\n{section}# Harbour\n\nThe harbour closes at dusk."
    passages = split_passages(text, max_chars=600)
    assert len(passages) > 2 and all(len(p) <= 600 for p in passages)
    assert passages[-1].startswith("# Harbour") and "dusk" in passages[-1]
    assert split_passages("A short system prompt.") == ["A short system prompt."]


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


def test_redactions_are_counted_per_request() -> None:
    secret = "Write to ops@example.com or call +44 20 7946 0958; password: hunter22."
    counts: Counter[str] = Counter()
    context_of([{"role": "system", "content": secret}], counts)
    assert counts.total() == 3
    context_of([{"role": "system", "content": "Nothing secret here."}], counts)
    assert counts.total() == 3


def test_context_is_system_and_pasted_text_and_the_question_is_the_last_turn() -> None:
    messages = [
        {
            "role": "system",
            "content": "Our support line opens at nine. Mail help@corp.example for refunds.",
        },
        {"role": "user", "content": "Hi there, I need some help please."},
        {"role": "assistant", "content": "Sure, the support line opens at nine."},
        {"role": "user", "content": "When does support open?"},
    ]
    passages, question = context_of(messages)
    assert [t for _, t in passages] == [
        "Our support line opens at nine. Mail [REDACTED:email] for refunds."
    ]
    assert question == "When does support open?"


def test_a_long_last_message_is_pasted_context() -> None:
    pasted = "Please summarise this. " + "The Orla Bridge opened in 1931. " * 2 + "x" * 300
    passages, question = context_of([{"role": "user", "content": pasted}])
    assert question is None
    assert "The Orla Bridge opened in 1931." in seg(passages[0][1])


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
