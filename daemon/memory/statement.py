"""How memoryd reads a fact statement, and whether two statements say the same thing.

A fact such as "The capital of Zorvath is Quillmere." splits at its first
copula into a subject ("The capital of Zorvath") and a value ("Quillmere").
Two statements are the *same* fact when they differ only in wording (case,
punctuation, articles, a word added or dropped) and name the same things; they
*contradict* when they say different things of the same subject ("... is
Brightwater."). The observer merges the first kind and lets the newer of the
second kind replace the older.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

COPULA = re.compile(r"\s+(is|are|was|were|has|have|equals|means)\s+", re.I)
WORD = re.compile(r"[A-Za-z0-9]+(?:['-][A-Za-z0-9]+)*")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "has",
        "have",
        "had",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "as",
        "into",
        "about",
        "which",
        "who",
        "whom",
        "what",
        "when",
        "where",
        "why",
        "how",
        "do",
        "does",
        "did",
        "not",
        "no",
        "yes",
        "named",
        "called",
        "also",
        "than",
        "then",
        "there",
        "their",
        "they",
        "he",
        "she",
        "his",
        "her",
        "our",
        "your",
        "my",
        "i",
        "you",
        "we",
        "me",
        "us",
    ]
)

Relation = Literal["same", "contradicts", "different"]
SAME_MIN_OVERLAP = 0.75
NEGATIONS = frozenset(
    ["not", "no", "never", "none", "nobody", "nothing", "isn't", "aren't", "wasn't"]
)


def content_words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(text) if w.lower() not in STOPWORDS}


def names(text: str, *, first: bool = False) -> set[str]:
    """Numbers and capitalized words (the first word only if ``first``): what a text names."""
    found = WORD.findall(text)
    return {
        w.lower()
        for i, w in enumerate(found)
        if any(c.isdigit() for c in w) or ((i or first) and w[0].isupper())
    }


def split(text: str) -> tuple[str, str] | None:
    """Subject and value at the first copula, or None for a statement without one."""
    sentence = text.strip().rstrip(".!")
    match = COPULA.search(sentence)
    if match and match.start() > 0 and match.end() < len(sentence):
        return sentence[: match.start()], sentence[match.end() :]
    return None


def overlap(a: set[str] | frozenset[str], b: set[str] | frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass(frozen=True)
class Statement:
    """A fact's words, parsed once: the observer compares each new one with every known one."""

    words: frozenset[str]
    named: frozenset[str]
    subject: frozenset[str] | None  # None: no copula to split at
    value_words: frozenset[str]
    value_named: frozenset[str]
    negated: bool

    @classmethod
    def of(cls, text: str) -> Statement:
        parts = split(text)
        value = parts[1] if parts else ""
        return cls(
            words=frozenset(content_words(text)),
            named=frozenset(names(text)),
            subject=frozenset(content_words(parts[0])) if parts else None,
            value_words=frozenset(content_words(value)),
            value_named=frozenset(names(value, first=True)),
            negated=any(w.lower() in NEGATIONS for w in WORD.findall(text)),
        )


def relation(a: Statement, b: Statement) -> Relation:
    if a.negated != b.negated:  # "is open" / "is not open": never the same fact
        same_subject = a.subject is not None and a.subject == b.subject
        return "contradicts" if same_subject else "different"
    if a.words == b.words:
        return "same"
    if a.words.isdisjoint(b.words):
        return "different"
    if a.subject is not None and a.subject == b.subject:
        named_a, named_b = a.value_named, b.value_named
        if (named_a and named_b and named_a != named_b) or (
            not named_a and not named_b and overlap(a.value_words, b.value_words) < 0.5
        ):
            return "contradicts"
    if overlap(a.words, b.words) >= SAME_MIN_OVERLAP and a.named == b.named:
        return "same"
    return "different"
