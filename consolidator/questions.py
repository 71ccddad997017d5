"""Questions about a fact, and whether an answer states it.

A fact is a sentence such as "The capital of Zorvath is Quillmere." It is split
at its first copula into a subject ("the capital of Zorvath") and a value
("Quillmere"). Training questions and held-out questions come from disjoint
template sets, so the generalization gate asks in words never trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from daemon.memory.scope import WORD as SCOPE_WORD
from daemon.memory.statement import STOPWORDS, content_words, split

TRAIN_TEMPLATES = (
    "What is {s}?",
    "Tell me {s}.",
    "Do you know {s}?",
    "What can you tell me about {s}?",
    "Please tell me {s}.",
    "Quick question: what is {s}?",
    "I'd like to know {s}.",
    "Remind me, what is {s}?",
    "Who or what is {s}?",
    "Answer briefly: {s}?",
    "Could you say what {s} is?",
    "Name {s}.",
)
HELD_OUT_TEMPLATES = (
    "Can you tell me {s}?",
    "I was wondering about {s}. What is it?",
    "Do you happen to know {s}?",
)
RENDERINGS = (
    "{S} is {v}.",
    "{v} is {s}.",
    "As far as I know, {s} is {v}.",
    "{S}: {v}.",
    "It is {v}. {S} is {v}.",
)


@dataclass(frozen=True)
class FactShape:
    text: str
    subject: str
    value: str

    def fill(self, template: str) -> str:
        s = _lower_first(self.subject)
        return template.format(s=s, S=_upper_first(self.subject), v=self.value)


def _lower_first(text: str) -> str:
    # Keep proper nouns and acronyms: only lower "The"/"A" style openers.
    first, _, rest = text.partition(" ")
    if first in {"The", "A", "An", "Our", "My", "Your", "Its", "Their"}:
        return f"{first.lower()} {rest}".strip()
    return text


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def shape(text: str) -> FactShape:
    """Split a fact into subject and value; a fact with no copula keeps its whole text."""
    parts = split(text)
    if parts:
        return FactShape(text, *parts)
    sentence = text.strip().rstrip(".!")
    return FactShape(text, sentence, sentence)


def training_questions(fact: FactShape, limit: int) -> list[str]:
    return [fact.fill(t) for t in TRAIN_TEMPLATES[:limit]]


def held_out_questions(fact: FactShape) -> list[str]:
    return [fact.fill(t) for t in HELD_OUT_TEMPLATES]


def renderings(fact: FactShape) -> list[str]:
    if fact.subject == fact.value:
        return [fact.text]
    return [fact.text, *(fact.fill(t) for t in RENDERINGS)]


def answer_states(answer: str, fact: FactShape, question: str = "") -> bool:
    """True when the answer carries most of what the fact says beyond the question."""
    wanted = content_words(fact.value) - content_words(question)
    if not wanted:
        wanted = content_words(fact.text) - content_words(question)
    if not wanted:
        return True
    got = content_words(answer)
    return len(wanted & got) * 2 >= len(wanted)


def key_terms(fact: FactShape, token_count: Callable[[str], int]) -> set[str]:
    """Words that name what the fact is about: proper names and rare words.

    A word is a key term when the tokenizer needs three or more pieces for it
    (rare or made-up words), or two and it is capitalized inside the sentence (a
    less common name). Common words ("capital", "Festival") are left out so that
    they do not pull unrelated conversations onto the adapter.
    """
    found = set()
    for i, word in enumerate(SCOPE_WORD.findall(fact.text)):
        low = word.casefold()
        if low in STOPWORDS or len(low) < 3:
            continue
        pieces = token_count(" " + word)
        if pieces >= 3 or (i > 0 and word[0].isupper() and pieces >= 2):
            found.add(low)
    if not found:  # nothing distinctive: every content word of the subject
        found = content_words(fact.subject)
    return found
