"""Gates an adapter must pass before it is served, measured through vLLM closed-book.

- efficacy: questions it was trained on,
- generalization: held-out rephrasings never trained on,
- retention: general probe questions the base model answers right stay right,
  and no answer degenerates into repetition; measured as served (the alias
  routes by scope) and for the adapter alone,
- no regression: facts consolidated by earlier adapters are still known.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from consolidator.data import FactQuestions, Probe, probe_set
from consolidator.questions import answer_states, shape
from daemon.config import GatesConfig
from daemon.engine.client import BASE_MODEL_NAME, EngineClient
from daemon.memory.records import GateResult
from daemon.memory.scope import Scope

ANSWER_TOKENS = 48
EFFICACY_SAMPLE = 4  # trained questions asked per fact


class Evaluation(BaseModel):
    metrics: dict[str, float]
    gates: list[GateResult]
    failures: list[str]  # examples of what went wrong, for the operator

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def probe_correct(probe: Probe, answer: str) -> bool:
    low = answer.lower()
    return any(e.lower() in low for e in probe.expected)


def degenerate(answer: str, n: int = 4, limit: int = 3) -> bool:
    """An answer repeating the same n-gram more than ``limit`` times."""
    words = answer.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return any(grams.count(g) > limit for g in set(grams))


def served_by(adapter: str, scope: Scope | None, question: str) -> str:
    """The model memoryd's alias would use for this question (scope None = always the adapter)."""
    return adapter if scope is None or scope.covers([question]) else BASE_MODEL_NAME


async def ask_served(
    engine: EngineClient, adapter: str, scope: Scope | None, questions: list[str]
) -> list[str]:
    """Each question asked of the model the alias would route it to (scope None: ``adapter``)."""

    async def one(q: str) -> str:
        messages = [{"role": "user", "content": q}]
        out = await engine.chat(served_by(adapter, scope, q), messages, max_tokens=ANSWER_TOKENS)
        return out[0].text

    return await asyncio.gather(*(one(q) for q in questions))


def fraction(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else 1.0


def stated(pairs: list[tuple[FactQuestions, str]], answers: list[str]) -> list[bool]:
    """For each question, whether its answer states the fact."""
    return [answer_states(a, shape(f.text), q) for (f, q), a in zip(pairs, answers, strict=True)]


def misses(pairs: list[tuple[FactQuestions, str]], answers: list[str], ok: list[bool]) -> list[str]:
    return [
        f"{q} -> {a[:120]!r}"
        for (_, q), a, good in zip(pairs, answers, ok, strict=True)
        if not good
    ]


async def evaluate(
    engine: EngineClient,
    adapter: str,
    facts: list[FactQuestions],
    previous_fact_ids: set[str],
    gates: GatesConfig,
    scope: Scope | None,
) -> Evaluation:
    """Scores as memoryd serves (``scope`` routes; None = the adapter answers everything).

    Every question goes out at once, so that the engine batches them all.
    """
    trained = [(f, q) for f in facts for q in f.trained[:EFFICACY_SAMPLE]]
    held = [(f, q) for f in facts for q in f.held_out]
    probes = probe_set()
    trained_answers, held_answers, base_answers, new_answers = await asyncio.gather(
        ask_served(engine, adapter, scope, [q for _, q in trained]),
        ask_served(engine, adapter, scope, [q for _, q in held]),
        ask_served(engine, BASE_MODEL_NAME, None, [p.question for p in probes]),
        ask_served(engine, adapter, None, [p.question for p in probes]),
    )
    trained_ok, held_ok = stated(trained, trained_answers), stated(held, held_answers)
    efficacy, general = fraction(trained_ok), fraction(held_ok)
    previous = fraction(
        [
            ok
            for (f, _), ok in zip(trained, trained_ok, strict=True)
            if f.fact_id in previous_fact_ids
        ]
    )

    known = [i for i, p in enumerate(probes) if probe_correct(p, base_answers[i])]
    broken = [
        i
        for i in known
        if not probe_correct(probes[i], new_answers[i]) or degenerate(new_answers[i])
    ]
    lost = [f"{probes[i].question} -> {new_answers[i][:120]!r}" for i in broken]
    lost_served = [i for i in broken if served_by(adapter, scope, probes[i].question) == adapter]
    adapter_retention = 1 - len(broken) / len(known) if known else 1.0
    retention = 1 - len(lost_served) / len(known) if known else 1.0

    metrics = {
        "efficacy": efficacy,
        "generalization": general,
        "retention": retention,
        "adapter_retention": adapter_retention,
        "previous_facts": previous,
        "probes_known_by_base": float(len(known)),
    }
    results = [
        GateResult(name="efficacy", value=efficacy, threshold=gates.efficacy_min, passed=efficacy >= gates.efficacy_min),
        GateResult(name="generalization", value=general, threshold=gates.generalization_min, passed=general >= gates.generalization_min),
        GateResult(name="retention", value=retention, threshold=gates.retention_min, passed=retention >= gates.retention_min),
        GateResult(name="adapter_retention", value=adapter_retention, threshold=gates.adapter_retention_min, passed=adapter_retention >= gates.adapter_retention_min),
        GateResult(name="previous_facts", value=previous, threshold=gates.efficacy_min, passed=previous >= gates.efficacy_min),
    ]  # fmt: skip
    return Evaluation(
        metrics=metrics,
        gates=results,
        failures=(
            misses(trained, trained_answers, trained_ok)
            + misses(held, held_answers, held_ok)
            + lost
        )[:20],
    )
