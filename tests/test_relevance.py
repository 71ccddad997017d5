"""Routing by meaning: a question about what an adapter learned reaches it in everyday words."""

from __future__ import annotations

import numpy as np

from daemon.memory.relevance import Embedder, Relevance

STATEMENTS = [
    "Visitors must be escorted at all times above the second floor.",
    "Employees may work from home up to two days a week, but never on Mondays.",
    "The capital of the planet Zorvath is Quillmere.",
]
THRESHOLD = 0.5


def test_questions_in_other_words_route_to_the_adapter_and_others_do_not() -> None:
    embedder = Embedder()
    relevance = Relevance(embedder.embed(STATEMENTS), THRESHOLD)
    about = [
        "Can my guest go up to the third floor alone?",
        "Am I allowed to work from home on Monday?",
        "Which city serves as Zorvath's capital?",
    ]
    unrelated = [
        "What is the capital of France?",
        "How many legs does a spider have?",
        "Write a haiku about autumn.",
    ]
    assert [relevance.covers(v) for v in embedder.embed(about)] == [True] * 3
    assert [relevance.covers(v) for v in embedder.embed(unrelated)] == [False] * 3
    assert not Relevance(np.zeros((0, 384), np.float32), THRESHOLD).covers(embedder.embed(["x"])[0])
