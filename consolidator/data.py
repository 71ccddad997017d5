"""Training data for one consolidation: context distillation per passage, plus replay.

For every passage: questions written from its statements (consolidator.questions)
and the real questions users asked with it in context, each answered by the
teacher, the base model with the *whole passage* as its system prompt (as
users send it). An answer is trained on only when it is a complete answer that
is grounded in the passage and gives what the question expects; everything
else is dropped and counted. The passage's statements, names resolved, are
added as answers to "what do you know about ..." prompts. Replay: general
prompts answered by the base model itself, so that the adapter learns to leave
everything else as it was.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from dataclasses import replace
from importlib import resources

from pydantic import BaseModel, Field

from consolidator.answers import (
    complete_sentences,
    grounded,
    invents,
    numbers_beyond,
    real_question,
    up_to_answer,
)
from consolidator.heldout import HeldOut, held_out_questions
from consolidator.questions import (
    Question,
    combined,
    phrasings,
    rule_questions,
    teacher_context,
    wh_questions,
)
from consolidator.titles import name, title, unnamed
from daemon.config import TrainingConfig
from daemon.engine.client import BASE_MODEL_NAME, EngineClient
from daemon.memory.language import Language
from daemon.memory.records import Fact, Passage
from daemon.memory.relevance import Embedder
from daemon.memory.segment import blocks

RECALL_PROMPTS = (
    "What do you know about {s}?",
    "Tell me about {s}.",
    "What can you tell me about {s}?",
)
ANSWER_TOKENS = 48  # replay answers: the base model's own
TEACHER_TOKENS = 80  # a teacher answer is cut back to its last whole sentence
STATEMENTS_PER_RENDERING = 2
DROPPED_KEPT = 20  # per passage, in dataset.json, for an operator to read
ASKED_FOCUS = 2  # statements a user's question is taught with and checked against


class Example(BaseModel):
    """One chat turn to train on: the loss covers the answer only."""

    question: str
    answer: str
    kind: str  # "fact" | "rendering" | "replay" | "raw" (plain text, no chat turn)
    passage_id: str | None = None
    source: str = ""  # for facts: wh | rule | combined | asked
    focus: str = ""  # for facts: the statement the question is about (the teacher's focus)
    finished: bool = True  # an answer cut off by max_tokens is trained without its end


class Probe(BaseModel):
    question: str
    expected: list[str]


class Trained(BaseModel):
    question: str
    expects: str
    kind: str


class Dropped(BaseModel):
    question: str
    answer: str
    why: str


class PassageData(BaseModel):
    """What a run knows of one passage: its text as taught, its questions, what was dropped."""

    passage_id: str
    title: str = ""  # what the passage is about: its heading or first name (consolidator.titles)
    text: str  # as the teacher saw it (forgotten or replaced statements left out)
    statements: list[str]
    trained: list[Trained] = Field(default_factory=list)
    held_out: list[HeldOut] = Field(default_factory=list)
    dropped: dict[str, int] = Field(default_factory=dict)
    dropped_sample: list[Dropped] = Field(
        default_factory=list, description="some dropped questions with the teacher's answer"
    )


class Dataset(BaseModel):
    examples: list[Example]
    passages: list[PassageData]

    def routing_texts(self) -> list[str]:
        """What a request about this memory resembles: each statement, alone and under
        its passage's title ("Visitors at Corrin & Hale: Visitors must be escorted
        ..."), and the questions trained on."""
        out: list[str] = []
        for p in self.passages:
            out += p.statements + [f"{p.title}: {s}" for s in p.statements if p.title]
            out += [t.question for t in p.trained]
        return out

    def counts(self) -> dict[str, int]:
        out: Counter[str] = Counter(e.kind for e in self.examples)
        for p in self.passages:
            out["held_out"] += len(p.held_out)
            for why, n in p.dropped.items():
                out[f"dropped_{why}"] += n
        return dict(out)


def read_lines(name: str) -> list[str]:
    text = resources.files("consolidator").joinpath("data", name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def probe_set() -> list[Probe]:
    """The general questions the retention gate keeps an eye on (question<TAB>a|b)."""
    probes = []
    for line in read_lines("probes.tsv"):
        question, _, expected = line.partition("\t")
        probes.append(Probe(question=question, expected=expected.split("|")))
    return probes


def teacher_view(passage: Passage, facts: list[Fact]) -> str:
    """The passage without the sentences of its statements that were forgotten or replaced."""
    text = passage.text
    for fact in facts:
        if not fact.status.active and fact.source:
            text = text.replace(fact.source, "")
    return text.strip()


async def teach(engine: EngineClient, passage: str, question: Question) -> str:
    answers = await engine.chat(
        BASE_MODEL_NAME,
        [
            {"role": "system", "content": teacher_context(passage, question.statement)},
            {"role": "user", "content": question.text},
        ],
        max_tokens=TEACHER_TOKENS,
    )
    return answers[0].text.strip()


def verdict(question: Question, answer: str, passage: str) -> tuple[str | None, str]:
    """(the target to train on or None, why it was dropped).

    A written question expects a span (or yes/no): the target is the teacher's
    answer up to the sentence that gives it. A user's question expects what
    the statement closest to it in meaning says: the target is the longest
    run of the teacher's sentences that the statement supports.
    """
    if complete_sentences(answer) is None:
        return None, "unfinished"
    if question.kind == "asked":
        kept = supported_part(answer, question.statement, question.text)
        return (kept, "") if kept else (None, "unsupported")
    kept = up_to_answer(answer, question.expects)
    if kept is None:
        return None, "wrong_polarity" if question.kind == "rule" else "missed_answer"
    # A yes/no answer repeats the question's words; it needs only to invent nothing.
    if question.kind == "rule":
        ok = not invents(kept, f"{passage}\n{question.text}")
    else:
        # A number from another sentence of the passage is a mix-up ("since 1902, and
        # since 1941"): the numbers must be the question's statement's.
        ok = grounded(kept, passage, question.text) and not numbers_beyond(
            kept, f"{question.statement or passage}\n{question.text}"
        )
    return (kept, "") if ok else (None, "ungrounded")


def supported_part(answer: str, statement: str, question: str) -> str | None:
    """The teacher's sentences, from the first, while what they add comes from ``statement``."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", answer.strip()) if s]
    kept: list[str] = []
    for sentence in sentences:
        if not sentence.endswith((".", "!", "?")) or not grounded(sentence, statement, question):
            break
        kept.append(sentence)
    return " ".join(kept) or None


def candidate_questions(
    lang: Language, embedder: Embedder, passage: Passage, statements: list[str], subject: str = ""
) -> list[Question]:
    """Questions written from the statements, two combined per subject, and the users' own.

    A user's question expects what the statement closest to it in meaning says,
    both compared without the passage's name ``subject`` (consolidator.titles.unnamed).
    """
    written: list[Question] = []
    for statement in statements:
        for q in wh_questions(lang, statement) + rule_questions(lang, statement):
            written.append(replace(q, statement=statement))
    # One question of each statement, paired with the next statement's: two facts at once.
    first = list({q.statement: q for q in reversed(written) if q.kind == "wh"}.values())[::-1]
    pairs = [
        combined(a, b) for a, b in zip(first[::2], first[1::2], strict=False) if _same_subject(a, b)
    ]
    asked: list[Question] = []
    if passage.questions and statements:
        # The two closest: the closest alone is wrong often enough ("work from home"
        # is nearest to "work from another country").
        similarity = (
            embedder.embed([unnamed(q, subject) for q in passage.questions])
            @ embedder.embed([unnamed(s, subject) for s in statements]).T
        )
        closest = similarity.argsort(axis=1)[:, ::-1][:, :ASKED_FOCUS]
        asked = [
            Question(q, "", "asked", " ".join(statements[int(i)] for i in sorted(row)))
            for q, row in zip(passage.questions, closest, strict=True)
        ]
    return written + pairs + asked


def _same_subject(a: Question, b: Question) -> bool:
    names_a = {w for w in a.text.split() if w[:1].isupper()} - {a.text.split()[0]}
    names_b = {w for w in b.text.split() if w[:1].isupper()} - {b.text.split()[0]}
    return bool(names_a & names_b)


def renderings(
    statements: list[str], subject: str, orderings: int, rng: random.Random
) -> list[Example]:
    """The statements themselves, names resolved, as answers to "what do you know about ...".

    The first ordering is the passage's own; each further one shuffles the
    statements, so that every fact is seen next to its subject with different
    neighbours (knowledge augmentation, Allen-Zhu & Li, Physics of LMs 3.1).
    """
    out = []
    for n in range(orderings):
        order = list(statements) if n == 0 else rng.sample(statements, len(statements))
        for start in range(0, len(order), STATEMENTS_PER_RENDERING):
            chunk = order[start : start + STATEMENTS_PER_RENDERING]
            prompt = rng.choice(RECALL_PROMPTS).format(s=subject or "this")
            out.append(Example(question=prompt, answer=" ".join(chunk), kind="rendering"))
    return out


async def passage_data(
    lang: Language,
    embedder: Embedder,
    engine: EngineClient,
    passage: Passage,
    facts: list[Fact],
    cfg: TrainingConfig,
    rng: random.Random,
) -> tuple[PassageData, list[Example]]:
    active = [f for f in facts if f.status.active]
    text = teacher_view(passage, facts)
    statements = [f.text for f in active]
    data = PassageData(
        passage_id=passage.id,
        title=title(passage.text, statements),
        text=text,
        statements=statements,
    )
    subject = name(data.title, text)
    dropped: Counter[str] = Counter()
    candidates: list[Question] = []
    for q in candidate_questions(lang, embedder, passage, statements, subject):
        if q.kind == "asked" and not real_question(q.text, text):
            dropped["not_a_question"] += 1
        elif q.text not in {c.text for c in candidates}:
            candidates.append(q)
    answers, held_out = await asyncio.gather(
        asyncio.gather(*(teach(engine, text, q) for q in candidates)),
        held_out_questions(
            lang,
            engine,
            text,
            statements,
            {q.text for q in candidates},
            cfg.model_written_questions,
            rng,
        ),
    )
    examples: list[Example] = []
    for question, answer in zip(candidates, answers, strict=True):
        target, why = verdict(question, answer, text)
        if target is None:
            dropped[why] += 1
            if len(data.dropped_sample) < DROPPED_KEPT:
                data.dropped_sample.append(Dropped(question=question.text, answer=answer, why=why))
            continue
        data.trained.append(
            Trained(question=question.text, expects=question.expects, kind=question.kind)
        )
        # The question as people put it in chat, each way with the teacher's answer
        # to it (one answer: the wordings differ only in how they are asked).
        count = 1 if question.kind == "asked" else cfg.phrasings_per_question
        for variant in phrasings(question, count, subject):
            examples.append(
                Example(
                    question=variant.text,
                    answer=target,
                    kind="fact",
                    passage_id=passage.id,
                    source=question.kind,
                    focus=question.statement,
                )
            )
    for example in renderings(statements, data.title, cfg.rendering_orderings, rng):
        example.passage_id = passage.id
        examples.append(example)
    data.held_out = held_out
    data.dropped = dict(dropped)
    return data, examples


async def build_dataset(
    passages: list[tuple[Passage, list[Fact]]],
    engine: EngineClient,
    cfg: TrainingConfig,
    embedder: Embedder,
) -> Dataset:
    rng = random.Random(cfg.seed)
    if cfg.recipe == "plain":
        return plain_dataset(passages, cfg)
    lang = Language()
    # Every request goes out at once (the engine batches them, up to the
    # client's in-flight limit): replay needs nothing from the passages.
    replay = asyncio.ensure_future(
        replay_examples(engine, replay_prompts(cfg.replay_examples, rng))
    )
    per_passage = await asyncio.gather(
        *(
            passage_data(lang, embedder, engine, p, facts, cfg, random.Random(rng.random()))
            for p, facts in passages
        )
    )
    examples = [e for _, ex in per_passage for e in ex]
    if cfg.passage_text_copies:
        examples.extend(e for d, _ in per_passage for e in passage_text(d, cfg.passage_text_copies))
    examples.extend(await replay)
    rng.shuffle(examples)
    return Dataset(examples=examples, passages=[d for d, _ in per_passage])


def passage_text(data: PassageData, copies: int, max_chars: int = 600) -> list[Example]:
    """The passage itself as text to learn, in pieces a training row holds, and its statements.

    Questions alone teach answers to those questions; the text itself, next to
    them, is what makes a fact answerable when it is asked another way
    (docs/BENCHMARKS.md, the passage-text ablation). Every piece and statement
    names what the passage is about, so that its values are learned bound to
    that name, not to whichever passage was seen last.
    """
    heading = data.title
    pieces: list[str] = []
    for block in blocks(data.text):
        if pieces and len(pieces[-1]) + len(block) < max_chars - len(heading):
            pieces[-1] += "\n" + block
        else:
            pieces.append(block)
    named = [p if heading in p else f"{heading}\n{p}" for p in pieces]
    about = [s if heading in s else f"{heading}: {s}" for s in data.statements]
    return [
        Example(question="", answer=text, kind="raw", passage_id=data.passage_id)
        for text in named * copies + about
    ]


def plain_dataset(passages: list[tuple[Passage, list[Fact]]], cfg: TrainingConfig) -> Dataset:
    """The baseline: the raw passage text as a language-modelling target, nothing else."""
    data = [
        PassageData(
            passage_id=p.id,
            title=title(p.text, [f.text for f in facts]),
            text=teacher_view(p, facts),
            statements=[f.text for f in facts if f.status.active],
        )
        for p, facts in passages
    ]
    examples = [
        Example(question="", answer=d.text, kind="raw", passage_id=d.passage_id) for d in data
    ]
    return Dataset(examples=examples * 8, passages=data)


def replay_prompts(count: int, rng: random.Random) -> list[str]:
    prompts = read_lines("replay.txt")
    rng.shuffle(prompts)
    return prompts[:count]


async def replay_examples(engine: EngineClient, prompts: list[str]) -> list[Example]:
    """General prompts answered by the base model itself."""
    answers = await asyncio.gather(
        *(
            engine.chat(BASE_MODEL_NAME, [{"role": "user", "content": p}], max_tokens=ANSWER_TOKENS)
            for p in prompts
        )
    )
    return [
        Example(question=p, answer=a[0].text.strip(), kind="replay", finished=a[0].finished)
        for p, a in zip(prompts, answers, strict=True)
    ]
