"""Knowledge benchmark: does recurring context become closed-book knowledge without forgetting?

Starts a real memoryd (managed vLLM, private Redis) in a temporary state
directory, delivers recurring system-prompt context through the public
endpoint, asks for a consolidation, then scores closed-book. Two suites:

``--suite documents`` (the default; bench/documents.py): multi-paragraph
documents of three kinds with hand-written questions in four sets. After the
run, bench/stored.py checks which expected values the adapter holds at all.

``--suite facts``: N one-sentence made-up facts (bench/facts.tsv), scored by

- efficacy:       questions the adapter was trained on (from its dataset.json),
- generalization: the held-out rephrasings in bench/facts.tsv, never trained on,
- ceiling:        the same held-out questions to the base model WITH the fact in context,
- retention:      general questions (probe set + tests' set) whose answers changed.

    .venv/bin/python bench/knowledge.py [--docs 9] [--recipe plain] [--json out.json]
    .venv/bin/python bench/knowledge.py --suite facts --facts 20

(after `make model`)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stored
from bench.documents import load, promoted_run, report, run_suite
from tests.harness import ROOT, Daemon, daemon_env, deliver_recurring

EFFICACY_PER_FACT = 4


def read_tsv(path: Path) -> list[list[str]]:
    return [
        line.split("\t")
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def ask(client: OpenAI, model: str, question: str, context: str | None = None) -> str:
    messages = [{"role": "system", "content": context}] if context else []
    messages.append({"role": "user", "content": question})
    reply = client.chat.completions.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=48,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def knows(answer: str, expected: str) -> bool:
    return any(e.lower() in answer.lower() for e in expected.split("|"))


def score(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", choices=["documents", "facts"], default="documents")
    parser.add_argument("--docs", type=int, default=None, help="documents suite: the first N")
    parser.add_argument(
        "--unheaded", action="store_true", help="documents suite: without their title line"
    )
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--recipe", choices=["distill", "plain"], default="distill")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. consolidation.training.epochs=3",
    )
    parser.add_argument(
        "--model", type=Path, default=ROOT / "var" / "models" / "SmolLM2-135M-Instruct"
    )
    args = parser.parse_args()

    facts = read_tsv(ROOT / "bench" / "facts.tsv")[: args.facts]
    general = read_tsv(ROOT / "consolidator" / "data" / "probes.tsv") + read_tsv(
        ROOT / "tests" / "general_questions.tsv"
    )
    state = Path(tempfile.mkdtemp(prefix="memoryd-bench-"))
    overrides = dict(item.split("=", 1) for item in args.set)
    env, port = daemon_env(
        state,
        args.model,
        **{key.replace(".", "__"): value for key, value in overrides.items()},
        consolidation__idle_after_s="1000000",
        consolidation__training__recipe=args.recipe,
        consolidation__gates__efficacy_min="0",
        consolidation__gates__generalization_min="0",
        consolidation__gates__retention_min="0",
        consolidation__gates__adapter_retention_min="0",
        consolidation__gates__passages_below_base_max="1000",
        consolidation__gates__general_kl_max="1000",
    )
    daemon = Daemon(state, port, env)
    daemon.start()
    # Measurements that must not become traffic memoryd learns from go to vLLM directly.
    engine = OpenAI(
        base_url=f"http://127.0.0.1:{env['MEMORYD_ENGINE__PORT']}/v1", api_key="unused", timeout=600
    )
    if args.suite == "documents":
        docs = load(ROOT / "bench" / "documents", args.docs, unheaded=args.unheaded)
        try:
            results = run_suite(daemon.openai(timeout=600), engine, daemon, docs, general)
            results.update(recipe=args.recipe, overrides=overrides, unheaded=args.unheaded)
        finally:
            daemon.stop()
        results["stored"] = stored.measure(results, docs, args.model)
        print(report(results))
        print(stored.report(results["stored"]))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    try:
        client = daemon.openai(timeout=300)
        base_general = [ask(engine, "base", q) for q, _ in general]
        ceiling = [knows(ask(engine, "base", q, context=f), k) for f, q, k in facts]
        before = [knows(ask(engine, "base", q), k) for _, q, k in facts]
        deliver_recurring(client, [fact for fact, _, _ in facts])
        time.sleep(2)  # the observer writes after the response
        run = promoted_run(daemon)
        model = run["adapter"]
        dataset = json.loads((Path(run["adapter_path"]) / "dataset.json").read_text())
        keyword = {f: k for f, _, k in facts}
        trained = [
            (next(k for f, k in keyword.items() if f in p["text"]), t["question"])
            for p in dataset["passages"]
            for t in p["trained"][:EFFICACY_PER_FACT]
        ]
        efficacy = [knows(ask(engine, model, q), k) for k, q in trained]
        held_out_answers = [ask(engine, model, q) for _, q, _ in facts]
        held_out = [knows(a, k) for a, (_, _, k) in zip(held_out_answers, facts, strict=True)]
        after_general = [ask(engine, model, q) for q, _ in general]
        changed = [
            q
            for (q, k), b, a in zip(general, base_general, after_general, strict=True)
            if not (a == b or (knows(a, k) and knows(b, k)))
        ]
        # As served: the alias routes by scope (daemon.memory.scope).
        held_out_served = [knows(ask(client, "memoryd", q), k) for _, q, k in facts]
        served_general = [ask(client, "memoryd", q) for q, _ in general]
        changed_served = [
            q
            for (q, k), b, a in zip(general, base_general, served_general, strict=True)
            if not (a == b or (knows(a, k) and knows(b, k)))
        ]
        steps = {s["name"]: s["seconds"] for s in run["steps"]}
        results = {
            "recipe": args.recipe,
            "overrides": overrides,
            "facts": len(facts),
            "examples": json.loads((Path(run["adapter_path"]) / "manifest.json").read_text())[
                "examples"
            ],
            "losses": {k: v for k, v in run["metrics"].items() if k.startswith("loss")},
            "closed_book_before": score(before),
            "efficacy": score(efficacy),
            "generalization": score(held_out),
            "with_context_ceiling": score(ceiling),
            "generalization_vs_ceiling": score(held_out) / max(score(ceiling), 1e-9),
            "generalization_served": score(held_out_served),
            "general_changed_served": len(changed_served),
            "general_changed": len(changed),
            "general_total": len(general),
            "changed_questions": changed,
            "held_out_missed": {
                q: a
                for (_, q, _), a, ok in zip(facts, held_out_answers, held_out, strict=True)
                if not ok
            },
            "consolidation_seconds": round(run["finished_at"] - run["started_at"], 1),
            "step_seconds": steps,
            "gates": {g["name"]: round(g["value"], 3) for g in run["gates"]},
        }
    finally:
        daemon.stop()
    print(f"\nknowledge benchmark: {len(facts)} facts, recipe {args.recipe}")
    print(f"  {'closed-book before':28} {results['closed_book_before']:.2f}")
    print(f"  {'efficacy (trained qs)':28} {results['efficacy']:.2f}")
    print(f"  {'generalization (held-out)':28} {results['generalization']:.2f}")
    print(f"  {'with-context ceiling':28} {results['with_context_ceiling']:.2f}")
    print(f"  {'generalization / ceiling':28} {results['generalization_vs_ceiling']:.2f}")
    print(
        f"  {'general answers changed':28} {results['general_changed']} of {results['general_total']}"
    )
    print(f"  {'consolidation seconds':28} {results['consolidation_seconds']} {steps}")
    print("  as served (the memoryd alias, routed by scope):")
    print(f"  {'  generalization':28} {results['generalization_served']:.2f}")
    print(
        f"  {'  general answers changed':28} {results['general_changed_served']} of {results['general_total']}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
