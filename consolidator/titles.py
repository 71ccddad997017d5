"""What a passage is about, as a name its facts are learned under.

The training data heads every piece of a passage with this name and asks
"what do you know about <name>?", so that its values are learned bound to it.
A document pasted without a heading still names its subject, nearly always in
its first sentence ("These rules apply to all employees of Fernhollow Foods.");
a word that merely starts that sentence ("These", "Employees") is no name, and
a passage that names nothing is better left without one than headed "These".
"""

from __future__ import annotations

import calendar
import re

from daemon.memory.language import words
from daemon.memory.segment import normalize
from daemon.memory.statement import STOPWORDS

# Capitalized, yet not what a passage is about.
NOT_NAMES = (
    frozenset(w.casefold() for w in [*calendar.month_name, *calendar.day_name] if w) | STOPWORDS
)
# Inside a name, between two capitalized words ("Guild of Glass Restorers", "Ostrander & Vey").
JOINERS = frozenset({"of", "&", "de", "da", "van", "von"})
EDGES = "*_`\"'“”‘’()[]"


def title(passage: str, statements: list[str]) -> str:
    """The passage's heading, else the first name its first statement gives, else ""."""
    first = passage.strip().splitlines()[0] if passage.strip() else ""
    if first.lstrip().startswith("#"):
        return normalize(first.lstrip("# ")).rstrip(".")
    return first_name(statements[0] if statements else first, passage)


def name(title: str, passage: str) -> str:
    """The name in a title: "Fernhollow Foods — Leave and Absence" -> "Fernhollow Foods",
    "Visitors at Corrin & Hale" -> "Corrin & Hale" (the passage writes "visitors")."""
    return first_name(title, passage) or title


def first_name(sentence: str, passage: str) -> str:
    """The first run of capitalized words in ``sentence`` that is a name.

    A run starts at a capitalized word that is neither a stopword, a month or
    day, nor a word the passage also writes in lower case ("Employees ...",
    "... employees"); it takes the capitalized words and numbers after it, and
    joiners between them; it ends at punctuation.
    """
    common = {w.casefold() for w in words(prose(passage)) if w[:1].islower()} | NOT_NAMES
    tokens = [t.strip(EDGES) for t in sentence.split()]
    run: list[str] = []
    for i, token in enumerate(tokens):
        word = token.rstrip(",.;:!?").removesuffix("'s").removesuffix("’s")
        capital = word[:1].isupper()
        if not run:
            if not capital or word.casefold() in common:
                continue
        elif not (capital or word[:1].isdigit()):
            joins = word in JOINERS and i + 1 < len(tokens) and tokens[i + 1][:1].isupper()
            if not joins:
                break
        run.append(word)
        if word != token:  # punctuation or a possessive after it: the name ends here
            break
    return " ".join(run)


def prose(text: str) -> str:
    """The text without code spans, paths and addresses: ``/etc/sablecask`` is no lower-case word."""
    text = re.sub(r"`[^`]*`", " ", text)
    return " ".join(t for t in text.split() if not re.search(r"[/@=<>]", t))


def unnamed(text: str, subject: str) -> str:
    """The text without the words of the passage's name ("Who is the current Warden of the
    Halsworth Guild?" -> "Who is the current Warden of the?").

    Every statement of a passage names its subject, and so do most questions
    about it: compared by meaning with the name in, a question is closest to
    whichever statement says the most about the name (the passage's first).
    """
    for word in words(subject):
        if word.casefold() not in STOPWORDS and any(c.isalpha() for c in word):
            text = re.sub(
                rf"(?<![\w.-]){re.escape(word)}(?:['’]s)?(?![\w-])", " ", text, flags=re.I
            )
    return re.sub(r"\s+([?!.,;:])", r"\1", re.sub(r"\s+", " ", text)).strip()
