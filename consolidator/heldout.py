"""Held-out questions for the gates: made by a procedure the training questions never use.

The training questions invert each statement around a span it gives
(consolidator.questions.wh_questions) or ask a rule as "Can I ...?". The
held-out ones ask the other way round ("Who was honoured with ... in 2009?"),
with a fronted preposition ("In what year ...?") or a rule as "Is it allowed
for ... to ...?" (consolidator.questions.held_out_forms); with
``model_written_questions`` the served model also writes some. A question is
kept only when it is not one of the training questions in other clothes and
the teacher (the base model with the whole passage in context) answers it
with what is expected: then that is the reference any answer is scored against.
"""

from __future__ import annotations

import asyncio
import random

from pydantic import BaseModel

from consolidator.answers import expected_in, polarity, real_question
from consolidator.questions import Question, content, held_out_forms, teacher_context
from daemon.engine.client import BASE_MODEL_NAME, EngineClient
from daemon.memory.language import Language

WRITE_PROMPT = "Write one short question that is answered by this sentence: {statement}"
STATEMENTS_ASKED = 5  # per passage, spread over it
WRITTEN_PER_STATEMENT = 2
KEPT_PER_PASSAGE = 6
TEACHER_TOKENS = 64
NEAR_DUPLICATE = 0.9  # content-word overlap with a training question: the same question
TEACHER_RECALL_MIN = 0.5


class HeldOut(BaseModel):
    question: str
    reference: str  # the statement that answers it
    expects: str  # the span (or yes/no) a right answer gives; "" for a model-written question
    teacher: str  # the teacher's answer with the passage in context

    def score(self, answer: str) -> float:
        """1/0 for a yes/no question, else the share of the reference's new words given."""
        if self.expects in ("yes", "no"):
            return float(polarity(answer) == self.expects)
        return recall(answer, self.reference, self.question)


def recall(answer: str, reference: str, question: str) -> float:
    """Share of the reference's content words, beyond those of the question, that the answer gives.

    ROUGE-style overlap rewards restating the question; this does not.
    """
    wanted = content(reference) - content(question)
    if not wanted:
        return 0.0
    return len(wanted & content(answer)) / len(wanted)


def _near(question: str, others: set[str]) -> bool:
    words = content(question)
    for other in others:
        theirs = content(other)
        if words and theirs and len(words & theirs) / len(words | theirs) >= NEAR_DUPLICATE:
            return True
    return False


async def held_out_questions(
    lang: Language,
    engine: EngineClient,
    passage: str,
    statements: list[str],
    trained: set[str],
    model_written: bool,
    rng: random.Random,
) -> list[HeldOut]:
    candidates = [
        (q, statement) for statement in statements for q in held_out_forms(lang, statement)
    ]
    if model_written:
        candidates += await _written(engine, passage, statements)
    seen: set[str] = set()
    kept_candidates = []
    for question, statement in candidates:
        if question.text in seen or _near(question.text, trained):
            continue
        seen.add(question.text)
        kept_candidates.append((question, statement))

    async def check(question: Question, statement: str) -> HeldOut | None:
        answers = await engine.chat(
            BASE_MODEL_NAME,
            [
                {"role": "system", "content": teacher_context(passage, statement)},
                {"role": "user", "content": question.text},
            ],
            max_tokens=TEACHER_TOKENS,
        )
        teacher = answers[0].text.strip()
        if question.expects:
            if not expected_in(teacher, question.expects):
                return None
        elif recall(teacher, statement, question.text) < TEACHER_RECALL_MIN:
            return None
        return HeldOut(
            question=question.text, reference=statement, expects=question.expects, teacher=teacher
        )

    checked = await asyncio.gather(*(check(q, s) for q, s in kept_candidates))
    kept = [h for h in checked if h is not None]
    rng.shuffle(kept)
    return kept[:KEPT_PER_PASSAGE]


async def _written(
    engine: EngineClient, passage: str, statements: list[str]
) -> list[tuple[Question, str]]:
    """Questions the served model writes for a few statements, kept if they are questions."""
    step = max(1, len(statements) // STATEMENTS_ASKED)
    chosen = statements[::step][:STATEMENTS_ASKED]

    async def write(statement: str) -> list[tuple[Question, str]]:
        outs = await engine.chat(
            BASE_MODEL_NAME,
            [{"role": "user", "content": WRITE_PROMPT.format(statement=statement)}],
            max_tokens=40,
            temperature=0.8,
            n=WRITTEN_PER_STATEMENT,
            stop=["\n"],
        )
        texts = [o.text.strip().strip('"') for o in outs]
        return [
            (Question(t, "", "held_out"), statement)
            for t in texts
            if real_question(t, passage) and content(statement) - content(t)
        ]

    return [pair for batch in await asyncio.gather(*(write(s) for s in chosen)) for pair in batch]
