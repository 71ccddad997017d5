"""Held-out questions for the gates: made by a procedure the training questions never use.

The training questions invert each statement around a span it gives
(consolidator.questions.wh_questions) or ask a rule as "Can I ...?". The
held-out ones (held_out_forms) ask the other way round ("Who was honoured
with ... in 2009?"), with a fronted preposition ("In what year ...?") or a
rule as "Are ... allowed to ...?"; with ``model_written_questions`` the
served model also writes some. A question is
kept only when it is not one of the training questions in other clothes and
the teacher (the base model with the whole passage in context) answers it
with what is expected: then that is the reference any answer is scored against.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import TYPE_CHECKING

from pydantic import BaseModel

from consolidator.answers import expected_in, polarity, real_question
from consolidator.questions import Question, content, teacher_context
from consolidator.syntax import (
    CLAUSE_PUNCT,
    CLAUSES,
    YEAR,
    Rule,
    as_question,
    invert,
    personal,
    phrase,
    rules,
    span_text,
    subject_of,
    wh_word,
)
from daemon.engine.client import BASE_MODEL_NAME, EngineClient
from daemon.memory.language import Language

if TYPE_CHECKING:
    from spacy.tokens import Span

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


def held_out_forms(lang: Language, statement: str) -> list[Question]:
    """Questions the training procedure never writes, for the gates.

    The other direction (who or what did it: "Who was honoured with the
    Brannock Prize in 2009?"), a fronted preposition ("In what year was ... born?"),
    and a rule asked as a permission ("Are visitors allowed to ...?"):
    other words and other grammar than the trained questions. Each clause of
    a statement joined by a semicolon is asked about on its own.
    """
    out: list[Question] = []
    for clause in re.split(r";\s+", statement):
        for sent in lang.parse(clause).sents:
            if not _misread(sent):
                out += _reversed(sent) + _fronted(sent)
        out += [_permission(rule) for rule in rules(lang, clause)]
    return out


def _misread(sent: Span) -> bool:
    """A subject that opens with a number: "From 2005 to 2016 Verhoeven taught ..." parsed
    with "2016 Verhoeven" as the subject, whose questions would be nonsense."""
    subj = subject_of(sent.root)
    if subj is None or subj.pos_ != "PROPN":
        return False
    return min(phrase(subj), key=lambda t: t.i).like_num


def _reversed(sent: Span) -> list[Question]:
    """Who or what did it, or is it: the named subject becomes the answer."""
    root = sent.root
    subj = subject_of(root)
    if subj is None or root.pos_ not in ("VERB", "AUX"):
        return []
    subject = phrase(subj)
    named = any(t.pos_ == "PROPN" for t in subject)
    if not named or root.lemma_ == "be" or any(t.tag_ == "MD" for t in root.children):
        return []  # "X is Y" asked backwards ("What is a fox named Bramble?") is not learnt
    who = "Who" if subj.ent_type_ in ("PERSON", "NORP") or personal(subj) else "What"
    # What follows the verb, and its auxiliaries: "Since 1902" or "After retiring"
    # before the subject would open the question with a fragment.
    rest = [
        t
        for child in root.children
        if child.dep_ not in (*CLAUSES, "nsubj", "nsubjpass")
        and (child.i > root.i or child.dep_ in ("aux", "auxpass", "neg"))
        and not (child.dep_ == "punct" and child.text in CLAUSE_PUNCT)
        for t in phrase(child)
    ]  # fmt: skip
    # "... between 22:00 and 06:00, or when ...": the "or" of a clause left out.
    text = as_question(re.sub(r"[\s,]+(?:and|or|but)$", "", f"{who} {span_text([root, *rest])}"))
    return [Question(text, span_text(subject), "held_out")] if 4 <= len(text.split()) <= 30 else []


def _fronted(sent: Span) -> list[Question]:
    """A year or a place asked with its preposition first: "In what year was ... abolished?"."""
    out = []
    for prep in (c for c in sent.root.children if c.dep_ == "prep"):
        obj = next((c for c in prep.children if c.dep_ == "pobj"), None)
        if obj is None:
            continue
        wh = wh_word(obj, prep)
        if wh == "When" and YEAR.fullmatch(obj.text):
            front = f"{prep.text.capitalize()} what year"
        elif wh == "Where":
            front = f"{prep.text.capitalize()} which place"
        else:
            continue  # "In 2.6.0": a version, not a year
        inverted = invert(sent, phrase(prep), front)
        if inverted:
            out.append(Question(inverted, span_text(phrase(obj)), "held_out"))
    return out


def _permission(r: Rule) -> Question:
    """A rule asked as a permission or a requirement: "Are visitors allowed to ...?"."""
    be = "Am" if r.who == "I" else "Are" if r.plural else "Is"
    kind = "required" if r.required else "allowed"
    return Question(as_question(f"{be} {r.who} {kind} to {r.verb} {r.tail}"), r.expects, "held_out")


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
