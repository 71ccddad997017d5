"""Gates an adapter must pass before it is served, measured through vLLM closed-book.

- efficacy: trained questions get what they expect, as served;
- held-out, per passage: questions the model wrote (a procedure the training
  questions never used), scored against the passage's statement, for the
  adapter as served and for the base model closed-book on the same questions:
  an adapter that leaves any passage below the base model is rejected; a
  passage with no held-out question is named as not judged, never scored 1.0;
- retention: general probe questions the base model answers right stay right
  and no answer degenerates, as served (routed) and for the adapter alone;
  and the adapter's KL to the base model on general prompts (measured in training) stays small;
- no regression: passages consolidated by earlier adapters are still known.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pydantic import BaseModel

from consolidator.answers import expected_in
from consolidator.data import Dataset, PassageData, Probe, probe_set
from consolidator.heldout import HeldOut
from daemon.config import GatesConfig
from daemon.engine.client import BASE_MODEL_NAME, EngineClient
from daemon.memory.records import GateResult

ANSWER_TOKENS = 48
EFFICACY_SAMPLE = 4  # trained questions asked per passage
Routes = Callable[[list[str]], list[bool]]  # which questions the alias sends to the adapter


class Evaluation(BaseModel):
    metrics: dict[str, float]
    gates: list[GateResult]
    failures: list[str]  # what went wrong, for the operator
    per_passage: dict[str, dict[str, float]]

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


async def ask(engine: EngineClient, models: list[str], questions: list[str]) -> list[str]:
    """Each question asked closed-book of its model, all at once."""

    async def one(model: str, q: str) -> str:
        out = await engine.chat(model, [{"role": "user", "content": q}], max_tokens=ANSWER_TOKENS)
        return out[0].text

    return await asyncio.gather(*(one(m, q) for m, q in zip(models, questions, strict=True)))


def mean(values: list[float]) -> float:
    """Of nothing, 1.0: nothing was trained or known before, so nothing was lost."""
    return sum(values) / len(values) if values else 1.0


def gate(
    name: str, value: float, threshold: float, *, at_most: bool = False, judged: bool = True
) -> GateResult:
    """A gate with nothing to measure passes, and says so (``judged`` false)."""
    passed = not judged or (value <= threshold if at_most else value >= threshold)
    return GateResult(name=name, value=value, threshold=threshold, passed=passed, judged=judged)


def held_out_per_passage(
    passages: list[PassageData],
    held: list[tuple[PassageData, HeldOut]],
    answers: list[str],
    base_answers: list[str],
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Each passage's held-out score next to the base model's, and what the operator must know.

    A passage none of whose held-out questions passed the teacher check cannot be
    compared with the base model: it is reported as not judged, never as a 1.0.
    """
    per_passage: dict[str, dict[str, float]] = {}
    below: list[str] = []
    unjudged: list[str] = []
    for p in passages:
        rows = [i for i, (q, _) in enumerate(held) if q is p]
        scores = [held[i][1].score(answers[i]) for i in rows]
        base = [held[i][1].score(base_answers[i]) for i in rows]
        ours, theirs = (sum(scores) / len(rows), sum(base) / len(rows)) if rows else (0.0, 0.0)
        per_passage[p.passage_id] = {
            "held_out": ours,
            "held_out_base": theirs,
            "held_out_questions": float(len(rows)),
        }
        name = f"passage {p.passage_id} ({_title(p)})"
        if not rows:
            unjudged.append(f"{name}: no held-out question passed the teacher check, not judged")
        elif ours < theirs:
            below.append(
                f"{name}: held-out {ours:.2f} below the base model's {theirs:.2f} "
                f"on {len(rows)} questions"
            )
    return per_passage, below + unjudged


async def evaluate(
    engine: EngineClient,
    adapter: str,
    dataset: Dataset,
    previous_passages: set[str],
    gates: GatesConfig,
    routes: Routes,
    general_kl: float,
) -> Evaluation:
    """Scores as memoryd serves (``routes`` decides adapter or base per question)."""
    trained = [(p, t) for p in dataset.passages for t in p.trained[:EFFICACY_SAMPLE]]
    held = [(p, h) for p in dataset.passages for h in p.held_out]
    probes = probe_set()
    t_qs, h_qs, p_qs = (
        [t.question for _, t in trained],
        [h.question for _, h in held],
        [p.question for p in probes],
    )
    t_route, h_route, p_route = routes(t_qs), routes(h_qs), routes(p_qs)

    def served(route: list[bool]) -> list[str]:
        return [adapter if r else BASE_MODEL_NAME for r in route]

    t_ans, h_ans, h_base, p_base, p_new = await asyncio.gather(
        ask(engine, served(t_route), t_qs),
        ask(engine, served(h_route), h_qs),
        ask(engine, [BASE_MODEL_NAME] * len(h_qs), h_qs),
        ask(engine, [BASE_MODEL_NAME] * len(p_qs), p_qs),
        ask(engine, [adapter] * len(p_qs), p_qs),
    )
    t_ok = [expected_in(a, t.expects) for (_, t), a in zip(trained, t_ans, strict=True)]
    failures = [
        f"trained {t.question!r} -> {a[:100]!r}"
        for (_, t), a, ok in zip(trained, t_ans, t_ok, strict=True)
        if not ok
    ]

    per_passage, held_failures = held_out_per_passage(dataset.passages, held, h_ans, h_base)
    failures = held_failures + failures
    worse = [i for i, p in per_passage.items() if p["held_out"] < p["held_out_base"]]
    unjudged = [i for i, p in per_passage.items() if not p["held_out_questions"]]
    for p in dataset.passages:
        eff = [ok for (q, _), ok in zip(trained, t_ok, strict=True) if q is p]
        per_passage[p.passage_id]["efficacy"] = mean([float(x) for x in eff])

    known = [i for i, p in enumerate(probes) if probe_correct(p, p_base[i])]
    broken = [i for i in known if not probe_correct(probes[i], p_new[i]) or degenerate(p_new[i])]
    broken_served = [i for i in broken if p_route[i]]
    failures += [f"probe {probes[i].question!r} -> {p_new[i][:100]!r}" for i in broken]
    adapter_retention = 1 - len(broken) / len(known) if known else 1.0
    retention = 1 - len(broken_served) / len(known) if known else 1.0
    previous = mean(
        [
            float(ok)
            for (p, _), ok in zip(trained, t_ok, strict=True)
            if p.passage_id in previous_passages
        ]
    )
    held_scores = [h.score(a) for (_, h), a in zip(held, h_ans, strict=True)]
    held_base = [h.score(a) for (_, h), a in zip(held, h_base, strict=True)]

    metrics = {
        "efficacy": mean([float(x) for x in t_ok]),
        "held_out": mean(held_scores) if held else 0.0,
        "held_out_base": mean(held_base) if held else 0.0,
        "held_out_questions": float(len(held)),
        "passages_below_base": float(len(worse)),
        "passages_without_held_out": float(len(unjudged)),
        "retention": retention,
        "adapter_retention": adapter_retention,
        "previous_passages": previous,
        "probes_known_by_base": float(len(known)),
        "probes_routed_to_adapter": float(sum(p_route)),
        "general_kl": general_kl,
    }
    results = [
        gate("efficacy", metrics["efficacy"], gates.efficacy_min),
        gate("held_out", metrics["held_out"], gates.generalization_min, judged=bool(held)),
        gate("passages_below_base", len(worse), gates.passages_below_base_max, at_most=True),
        gate("retention", retention, gates.retention_min),
        gate("adapter_retention", adapter_retention, gates.adapter_retention_min),
        gate("general_kl", general_kl, gates.general_kl_max, at_most=True),
        gate("previous_passages", previous, gates.efficacy_min),
    ]
    return Evaluation(
        metrics=metrics, gates=results, failures=failures[:20], per_passage=per_passage
    )


def _title(p: PassageData) -> str:
    first = p.statements[0] if p.statements else p.text
    return first[:60]
