"""The realistic suite of bench/knowledge.py: documents users paste, questions people write.

Each document of bench/documents/*.yaml (encyclopedic prose, policies, technical
notes; questions written by hand, independently of memoryd's question
generator) is the system prompt of three distinct conversations through the
public endpoint, in which its "asked" questions are asked. After one
consolidation every question set is answered closed-book by the adapter as
served (the ``memoryd`` alias, routed) and alone (``mem-vN``), and compared
with the base model closed-book and with the base model given the document
(the ceiling), all in the same run.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from openai import OpenAI
from pydantic import BaseModel

from consolidator.answers import polarity
from consolidator.heldout import recall
from tests.harness import Daemon, wait_for_run

SETS = ("asked", "never_asked", "application", "distractor")
MEMORY_SETS = ("asked", "never_asked", "application")  # routing should send these to the adapter
RUN_TIMEOUT_S = 3600
CONVERSATIONS = (("Hi, I have a few questions.", 2), ("Quick question.", 2), ("Hello!", 1))


class Item(BaseModel):
    q: str
    answer: str
    expect: str


class Document(BaseModel):
    slug: str
    kind: str
    title: str
    text: str
    facts: list[str]
    questions: dict[str, list[Item]]


def load(folder: Path, limit: int | None = None, *, unheaded: bool = False) -> list[Document]:
    """The documents; ``unheaded``: without their "# Title" line, as text is often pasted."""
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if unheaded:
            raw["text"] = re.sub(r"\A# [^\n]*\n+", "", raw["text"])
        docs.append(Document(slug=path.stem, **raw))
    # Interleave kinds, so that --docs N keeps a mix.
    by_kind: dict[str, list[Document]] = {}
    for d in docs:
        by_kind.setdefault(d.kind, []).append(d)
    mixed = [d for group in zip(*by_kind.values(), strict=False) for d in group]
    return mixed[:limit] if limit else mixed


def right(answer: str, expect: str) -> bool:
    """The answer gives what the question expects (yes/no by its polarity)."""
    if expect.lower() in ("yes", "no"):
        return polarity(answer) == expect.lower()
    return any(mention(answer, alt) for alt in expect.split("|"))


def mention(text: str, term: str) -> re.Match[str] | None:
    """Where ``text`` writes ``term`` as a whole word or phrase, any case."""
    term = term.strip()
    return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, re.I) if term else None


def chat(client: OpenAI, model: str, messages: list[dict[str, str]]) -> tuple[str, str]:
    """(answer, the model that answered)."""
    reply = client.chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=48,
        temperature=0,
    )
    return reply.choices[0].message.content or "", reply.model


def ask_all(
    client: OpenAI, jobs: list[tuple[str, str, str | None]], workers: int = 16
) -> list[tuple[str, str]]:
    """(model, question, context or None) -> (answer, model that answered), all at once."""

    def one(job: tuple[str, str, str | None]) -> tuple[str, str]:
        model, question, context = job
        messages = [{"role": "system", "content": context}] if context else []
        messages.append({"role": "user", "content": question})
        return chat(client, model, messages)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, jobs))


def deliver(client: OpenAI, docs: list[Document]) -> None:
    """Each document in three distinct conversations, its asked questions spread over them."""
    for doc in docs:
        asked = iter(doc.questions["asked"])
        for opener, turns in CONVERSATIONS:
            messages = [
                {"role": "system", "content": doc.text},
                {"role": "user", "content": opener},
            ]
            answer, _ = chat(client, "memoryd", messages)
            for item in [q for _, q in zip(range(turns), asked, strict=False)]:
                messages += [
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": item.q},
                ]
                answer, _ = chat(client, "memoryd", messages)


def promoted_run(daemon: Daemon) -> dict[str, Any]:
    """Ask for a consolidation and wait for it; a run that is not promoted ends the bench."""
    run_id = daemon.admin("POST", "/admin/consolidate").json()["run"]
    run = wait_for_run(daemon, RUN_TIMEOUT_S, run_id)
    if run["state"] != "promoted":
        raise SystemExit(
            f"consolidation ended {run['state']}: {run.get('error') or run['reasons']}"
        )
    return run


def run_suite(
    client: OpenAI,
    engine: OpenAI,
    daemon: Daemon,
    docs: list[Document],
    general: list[list[str]],
) -> dict[str, Any]:
    """``client`` speaks to memoryd, ``engine`` straight to its vLLM.

    Every measurement but "as served" goes to vLLM directly: a question asked
    through memoryd with a document in context is traffic memoryd learns from,
    which would turn the never-asked questions into asked ones.
    """
    items = [(d, s, it) for d in docs for s in SETS for it in d.questions[s]]
    qs = [it.q for _, _, it in items]
    base = ask_all(engine, [("base", q, None) for q in qs])
    ceiling = ask_all(engine, [("base", it.q, d.text) for d, _, it in items])
    base_general = ask_all(engine, [("base", q, None) for q, _ in general])

    started = time.monotonic()
    deliver(client, docs)
    time.sleep(3)  # the observer writes after the response
    delivered_s = time.monotonic() - started
    run = promoted_run(daemon)
    adapter = run["adapter"]
    alone = ask_all(engine, [(adapter, q, None) for q in qs])
    served = ask_all(client, [("memoryd", q, None) for q in qs])
    general_alone = ask_all(engine, [(adapter, q, None) for q, _ in general])
    general_served = ask_all(client, [("memoryd", q, None) for q, _ in general])

    def cell(rows: list[int], answers: list[tuple[str, str]]) -> dict[str, float]:
        ok = [right(answers[i][0], items[i][2].expect) for i in rows]
        rec = [recall(answers[i][0], items[i][2].answer, items[i][2].q) for i in rows]
        return {"right": sum(ok) / len(ok), "recall": sum(rec) / len(rec), "n": len(rows)}

    def changed(
        rows: list[int],
        answers: list[tuple[str, str]],
        before: list[tuple[str, str]],
        expects: list[str],
    ) -> int:
        return sum(
            1
            for i in rows
            if not (
                answers[i][0] == before[i][0]
                or (right(answers[i][0], expects[i]) and right(before[i][0], expects[i]))
            )
        )

    table: dict[str, dict[str, dict[str, float]]] = {}
    groups = {f"{s}": [i for i, (_, si, _) in enumerate(items) if si == s] for s in SETS}
    for kind in sorted({d.kind for d in docs}):
        for s in SETS:
            groups[f"{s}/{kind}"] = [
                i for i, (d, si, _) in enumerate(items) if si == s and d.kind == kind
            ]
    for name, rows in groups.items():
        if rows:
            table[name] = {
                "base": cell(rows, base),
                "ceiling": cell(rows, ceiling),
                "served": cell(rows, served),
                "adapter": cell(rows, alone),
            }
    per_doc = {
        d.slug: {
            who: cell(
                [i for i, (dd, s, _) in enumerate(items) if dd is d and s == "never_asked"], answers
            )["right"]
            for who, answers in (
                ("base", base),
                ("ceiling", ceiling),
                ("served", served),
                ("adapter", alone),
            )
        }
        for d in docs
    }
    memory = [i for i, (_, s, _) in enumerate(items) if s in MEMORY_SETS]
    distractors = groups["distractor"]
    routed = [i for i in range(len(items)) if served[i][1] == adapter]
    routed_general = [i for i, (_, m) in enumerate(general_served) if m == adapter]
    negatives = len(distractors) + len(general)
    true_pos = len([i for i in routed if i in set(memory)])
    expects = [it.expect for _, _, it in items]
    g_expects = [k for _, k in general]
    return {
        "documents": len(docs),
        "facts": sum(len(d.facts) for d in docs),
        "table": table,
        "never_asked_per_document": per_doc,
        "routing": {
            "recall": true_pos / len(memory),
            "precision": true_pos / max(1, len(routed) + len(routed_general)),
            "false_positives": len(routed) - true_pos + len(routed_general),
            "negatives": negatives,
        },
        "distractors_changed": {
            "served": changed(distractors, served, base, expects),
            "adapter": changed(distractors, alone, base, expects),
            "total": len(distractors),
        },
        "general_changed": {
            "served": changed(list(range(len(general))), general_served, base_general, g_expects),
            "adapter": changed(list(range(len(general))), general_alone, base_general, g_expects),
            "total": len(general),
        },
        "delivery_seconds": round(delivered_s, 1),
        "consolidation_seconds": round(run["finished_at"] - run["started_at"], 1),
        "step_seconds": {s["name"]: s["seconds"] for s in run["steps"]},
        "data": next((s["detail"] for s in run["steps"] if s["name"] == "data"), {}),
        "gates": {g["name"]: round(g["value"], 3) for g in run["gates"]},
        # Which passage the gates would reject, and on which questions: gone with the daemon.
        "reasons": run["reasons"],
        "per_passage": next(
            (s["detail"].get("per_passage", {}) for s in run["steps"] if s["name"] == "evaluate"),
            {},
        ),
        "adapter_path": run["adapter_path"],
        "answers": [
            {
                "doc": d.slug,
                "set": s,
                "q": it.q,
                "expect": it.expect,
                "base": base[i][0],
                "ceiling": ceiling[i][0],
                "served": served[i][0],
                "served_by": served[i][1],
                "adapter": alone[i][0],
            }
            for i, (d, s, it) in enumerate(items)
        ],
    }


def report(results: dict[str, Any]) -> str:
    lines = [
        f"documents suite: {results['documents']} documents, {results['facts']} facts "
        "(share of questions answered right; recall of the reference answer's words in brackets)",
        f"  {'set':28} {'base':>12} {'ceiling':>12} {'served':>12} {'adapter':>12}",
    ]
    for name, row in results["table"].items():
        cells = " ".join(
            f"{row[w]['right']:.2f} ({row[w]['recall']:.2f})"
            for w in ("base", "ceiling", "served", "adapter")
        )
        lines.append(f"  {name + ' (' + str(int(row['base']['n'])) + ')':28} {cells}")
    r = results["routing"]
    lines.append(
        f"  routing: recall {r['recall']:.2f}, precision {r['precision']:.2f} ({r['false_positives']} of {r['negatives']} off-topic questions routed to the adapter)"
    )
    for what in ("distractors_changed", "general_changed"):
        c = results[what]
        lines.append(
            f"  {what.replace('_', ' ')}: served {c['served']} of {c['total']}, adapter alone {c['adapter']} of {c['total']}"
        )
    lines.append(f"  consolidation {results['consolidation_seconds']} s {results['step_seconds']}")
    lines.append(f"  data {results['data']}")
    lines.append(f"  gates {results['gates']}")
    return "\n".join(lines)
