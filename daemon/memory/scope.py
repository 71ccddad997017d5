"""Which conversations a memory adapter applies to.

An adapter's facts are about particular things: the Zorvath capital, the
glimmerphone. Every fact carries key terms (names and rare words, chosen by
the consolidator); a conversation that mentions one is served by the memory
adapter, any other by the base model, so that unrelated answers stay exactly
what they were. ``routing: always`` serves the adapter to every conversation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

WORD = re.compile(r"\w+")


def words(text: str) -> set[str]:
    """Lower-cased words; "Zorvath's" gives "zorvath" and "s"."""
    return {w.casefold() for w in WORD.findall(text)}


class Scope:
    def __init__(self, key_terms: Iterable[str]) -> None:
        self.terms = frozenset(t.casefold() for t in key_terms)

    def covers(self, texts: Iterable[str]) -> bool:
        return any(not self.terms.isdisjoint(words(t)) for t in texts)
