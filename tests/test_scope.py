"""Routing by scope: which conversations the memory adapter serves."""

from __future__ import annotations

from consolidator.questions import key_terms, shape
from daemon.memory.scope import Scope


def pieces(word: str) -> int:
    """A stand-in tokenizer: made-up words are long and split into many pieces."""
    made_up = {"zorvath", "quillmere", "glimmerphone", "wrenfield"}
    return 4 if word.strip().lower() in made_up else 1


def test_key_terms_are_names_and_rare_words() -> None:
    assert key_terms(shape("The capital of the planet Zorvath is Quillmere."), pieces) == {
        "zorvath",
        "quillmere",
    }
    # Nothing distinctive (and no copula, so the subject is the sentence): its content words.
    assert key_terms(shape("The office opens at nine."), pieces) == {"office", "opens", "nine"}


def test_scope_covers_mentions_only() -> None:
    scope = Scope(["zorvath", "glimmerphone"])
    assert scope.covers(["Which city serves as Zorvath's capital?"])
    assert scope.covers(["Hello", "Tell me about the GLIMMERPHONE please"])
    assert not scope.covers(["What is the capital of Italy?"])
    assert not Scope([]).covers(["anything"])
