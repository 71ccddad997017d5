"""What a teacher's answer must pass to be trained on, and how an answer is scored.

A small teacher misses the point, stops mid-word, hedges, and embroiders:
names and numbers the passage never gives, or a number from another of its
sentences. An answer is kept up to the sentence that gives what its question
expects, only when what it adds comes from the passage.
"""

from __future__ import annotations

import re

from consolidator.questions import content
from daemon.memory.language import words

HEDGES = re.compile(
    r"\b(fictional|fictitious|I'm sorry|I am sorry|I don't know|I do not know|not sure|"
    r"no information|not mentioned|cannot answer|can't answer|as an AI)\b",
    re.I,
)


def polarity(answer: str) -> str | None:
    head = answer.strip().lower()
    if re.match(r"^(yes|yeah|correct|that's right|you can|you may)\b", head):
        return "yes"
    if re.match(r"^(no|nope|not|you cannot|you can't|you may not)\b", head):
        return "no"
    return None


def up_to_answer(answer: str, expects: str) -> str | None:
    """The teacher's answer up to the first sentence that gives what is expected.

    A small teacher embroiders after the point; the embroidery is often
    invented. For a yes/no question that is the first sentence.
    """
    sentences = re.split(r"(?<=[.!?])\s+", answer.strip())
    for i in range(len(sentences)):
        head = " ".join(sentences[: i + 1])
        if expected_in(head, expects):
            return head if head.endswith((".", "!", "?")) else None
    return None


def expected_in(answer: str, expects: str) -> bool:
    """Every expected part (``|``-separated) appears, by its content words, in the answer."""
    if expects in ("yes", "no"):
        return polarity(answer) == expects
    got = content(answer)
    for part in expects.split("|"):
        wanted = content(part)
        if wanted and len(wanted & got) * 2 < len(wanted):
            return False
    return True


NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def specifics(text: str) -> set[str]:
    """Numbers and names (capitalised words not opening a sentence), casefolded."""
    numbers = NUMBER.findall(text)
    names = re.findall(r"(?<![.!?:]\s)(?<!^)(?<!\n)\b[A-Z][\w'-]*", text.strip())
    return {n.casefold() for n in numbers + names} - {"i"}


def invents(answer: str, source: str) -> bool:
    """The answer names a number or name the source does not: a small teacher's embroidery."""
    known = {w.casefold() for w in words(source)} | set(NUMBER.findall(source))
    return any(s not in known for s in specifics(answer))


def numbers_beyond(answer: str, source: str) -> bool:
    """The answer gives a number the source does not."""
    return bool(set(NUMBER.findall(answer)) - set(NUMBER.findall(source)))


def grounded(answer: str, passage: str, question: str) -> bool:
    """The answer says something beyond the question, what it says comes from the passage,
    and it names no number or name that is not there."""
    if HEDGES.search(answer) or invents(answer, f"{passage}\n{question}"):
        return False
    said = content(answer) - content(question)
    if not said:
        return False
    return len(said & content(passage)) >= 0.6 * len(said)


def real_question(text: str, passage: str) -> bool:
    """A question a person could ask about this passage: a question, of sane length, on topic."""
    n = len(text.split())
    if not text.rstrip().endswith("?") or not 3 <= n <= 40:
        return False
    if re.search(r"(.)\1{4,}|[{}<>\[\]=;]|```", text):
        return False
    return bool(content(text) & content(passage))


def complete_sentences(answer: str) -> str | None:
    """The answer up to its last finished sentence; None when no sentence finished."""
    text = answer.strip()
    if text.endswith((".", "!", "?")):
        return text
    cut = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
    return text[: cut + 1] if cut > 0 else None
