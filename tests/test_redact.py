"""The redactor on a planted corpus of 24 kinds of secrets and personal data.

detect-secrets alone and memoryd's patterns alone are measured against the
corpus; together they must catch every kind, and ordinary prose must survive.
"""

from __future__ import annotations

import pytest

from daemon.memory.redact import (
    MARKER,
    Redacted,
    detect_secrets_only,
    patterns_only,
    redact_counted,
)
from tests.secret_corpus import FACTS, OPS_NOTES, PLANTED, values

ORDINARY = [
    *FACTS,
    "The bridge opened in 1932 and is 503 metres long.",
    "Harbour master Ines Marlowe has run Port Elsmere since 2011; the ferry costs 12 euros.",
    "Release 4.18.2 shipped on 2024-03-07 with 1,204 fixes.",
    "The password policy requires twelve characters.",
    "Order 88123 weighed 14.5 kg and left bay 7 at 09:30.",
]


def caught(detector: object, kind: str) -> bool:
    sentence, planted = PLANTED[kind]
    out: Redacted = detector(sentence)  # type: ignore[operator]
    return not any(v in out.text for v in planted)


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_every_planted_kind_is_redacted(kind: str) -> None:
    sentence, planted = PLANTED[kind]
    out = redact_counted(sentence)
    assert not [v for v in planted if v in out.text], out.text
    assert MARKER in out.text and out.total >= 1


def test_detect_secrets_and_the_patterns_each_miss_kinds_the_other_catches() -> None:
    """The measurement behind using both (docs/ARCHITECTURE.md gives the numbers)."""
    by_library = {k for k in PLANTED if caught(detect_secrets_only, k)}
    by_patterns = {k for k in PLANTED if caught(patterns_only, k)}
    assert len(PLANTED) >= 20
    assert {"us_ssn", "iban", "card_visa", "phone_us", "password_prose"}.isdisjoint(by_library)
    assert "azure_storage_key" in by_library - by_patterns
    assert by_library | by_patterns == set(PLANTED)


def test_the_whole_ops_notes_keep_their_facts_and_lose_every_value() -> None:
    out = redact_counted(OPS_NOTES)
    assert not [v for v in values() if v in out.text]
    assert all(fact in out.text for fact in FACTS)
    assert out.total >= len(PLANTED)


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_prose_survives(text: str) -> None:
    assert redact_counted(text).text == text
