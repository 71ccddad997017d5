"""Recipe ablation: what each part of the training data buys, on one run's dataset.

Retrains LoRA adapters from a consolidation's dataset.json (written next to every
adapter) with parts of the data changed, and scores each after every epoch on
the hand-written question sets of bench/documents (greedy, closed-book, the
same matching as bench/knowledge.py), next to the base model closed-book and
given the document (the ceiling). Training is consolidator.train's own loop
(train_adapter, with the daemon's defaults); answers come from transformers, not vLLM, so the
numbers compare variants with each other, not with the served numbers.

Variants (``name[+sd]:learning_rate:epochs:rank``, comma-separated):
- ``qa``: the dataset's questions, renderings and replay without the passage text;
- ``text``: ``qa`` plus the passage itself in pieces and its statements (the recipe);
- ``focus``: ``qa`` with each teacher answer replaced by the statement it is about;
- ``+sd`` on any of them: on-policy self-distillation at every step as well.

A GPU makes this minutes instead of hours. First run bench/knowledge.py and pass
its adapter's dataset.json:

    .venv/bin/python bench/ablation.py var/bench/adapters/v1/dataset.json \
        --variants text:1e-3:4:16,text+sd:1e-3:4:16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.documents import SETS, load, right
from consolidator.data import Dataset, Example, passage_text
from consolidator.train import train_adapter
from daemon.config import TrainingConfig

ROOT = Path(__file__).resolve().parent.parent


def variant(dataset: Dataset, name: str) -> list[Example]:
    qa = [e for e in dataset.examples if e.kind != "raw"]
    if name == "qa":
        return qa
    if name == "focus":
        return [
            e.model_copy(update={"answer": e.focus}) if e.kind == "fact" and e.focus else e
            for e in qa
        ]
    if name == "text":
        copies = TrainingConfig().passage_text_copies
        return qa + [e for p in dataset.passages for e in passage_text(p, copies)]
    raise SystemExit(f"unknown variant {name!r}: qa, text or focus")


class Scorer:
    """Greedy answers to every question set, closed-book or given the document."""

    def __init__(
        self, tokenizer: Any, device: str, questions: dict[str, list[tuple[str, str, str]]]
    ):
        self.tokenizer, self.device, self.questions = tokenizer, device, questions

    @torch.no_grad()
    def answers(self, model: Any, conversations: list[list[dict[str, str]]]) -> list[str]:
        tok, out = self.tokenizer, []
        for start in range(0, len(conversations), 32):
            prompts = [
                tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                for c in conversations[start : start + 32]
            ]
            batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = batch.to(self.device)
            ids = model.generate(
                **batch, max_new_tokens=48, do_sample=False, pad_token_id=tok.pad_token_id
            )
            width = batch["input_ids"].shape[1]
            out += [tok.decode(row[width:], skip_special_tokens=True) for row in ids]
        return out

    def score(self, model: Any, context: dict[str, str] | None = None) -> dict[str, Any]:
        model.eval()
        result = {}
        for name, items in self.questions.items():
            conversations = [
                ([{"role": "system", "content": context[doc]}] if context else [])
                + [{"role": "user", "content": q}]
                for q, _, doc in items
            ]
            answers = self.answers(model, conversations)
            hits = [right(a, expect) for a, (_, expect, _) in zip(answers, items, strict=True)]
            result[name] = {"score": sum(hits) / len(hits), "answers": answers}
        model.train()
        return result


def train(
    model_dir: Path,
    dataset: Dataset,
    spec: str,
    scorer: Scorer,
    out_dir: Path,
) -> dict[int, dict[str, Any]]:
    """consolidator.train's own loop on one variant, scored after every epoch.

    ``spec`` is ``name[+sd]:learning_rate:epochs:rank``; ``+sd`` adds the
    on-policy self-distillation term at every step (consolidator.selfdistill).
    """
    name, lr, epochs, rank = spec.split(":")
    data, _, distill = name.partition("+")
    if distill not in ("", "sd"):
        raise SystemExit(f"unknown modifier {distill!r} in {spec!r}: only +sd")
    cfg = TrainingConfig(
        learning_rate=float(lr),
        epochs=int(epochs),
        rank=int(rank),
        alpha=2 * int(rank),
        min_steps=0,
        self_distill_every=1 if distill else 0,
    )
    per_epoch: dict[int, dict[str, Any]] = {}

    def score(epoch: int, model: Any) -> None:
        per_epoch[epoch] = scorer.score(model)
        print(f"  epoch {epoch}: " + summary(per_epoch[epoch]), flush=True)

    metrics = train_adapter(
        model_dir,
        variant(dataset, data),
        cfg,
        out_dir,
        contexts={p.passage_id: p.text for p in dataset.passages},
        inspect=score,
    )
    print(f"  trained in {metrics['train_seconds']:.0f} s", flush=True)
    return per_epoch


def summary(result: dict[str, Any]) -> str:
    return "  ".join(f"{name} {result[name]['score']:.2f}" for name in SETS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", type=Path, help="a consolidation's dataset.json")
    parser.add_argument("--variants", default="qa:1e-3:4:16,text:1e-3:4:16,focus:1e-3:4:16")
    parser.add_argument(
        "--model", type=Path, default=ROOT / "var" / "models" / "SmolLM2-135M-Instruct"
    )
    parser.add_argument("--json", type=Path, help="write every answer here too")
    args = parser.parse_args()

    dataset = Dataset.model_validate_json(args.dataset.read_text())
    docs = load(ROOT / "bench" / "documents")
    questions = {
        name: [(item.q, item.expect, doc.slug) for doc in docs for item in doc.questions[name]]
        for name in SETS
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    scorer = Scorer(tokenizer, device, questions)
    base: Any = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    base = base.to(device)
    results: dict[str, Any] = {
        "base": scorer.score(base),
        "ceiling": scorer.score(base, {doc.slug: doc.text for doc in docs}),
    }
    print(f"base closed-book: {summary(results['base'])}")
    print(f"ceiling:          {summary(results['ceiling'])}")
    with tempfile.TemporaryDirectory() as out:
        for spec in args.variants.split(","):
            print(f"{spec}:", flush=True)
            results[spec] = train(args.model, dataset, spec, scorer, Path(out) / spec)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
