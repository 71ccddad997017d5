"""Stored, yet not answered? Whether the adapter holds each expected value at all.

A wrong answer has two possible causes: the value never made it into the
weights, or it is there and the question does not reach it. For every question
of the documents suite whose expected value is written in one of its passage's
statements, this reads that statement as it was trained ("<title>: <statement>")
and checks, token by token, that the model predicts the value from the words
before it (greedy, teacher-forced): the value is *stored*. The same is checked
for the base model. The share answered right among stored values is what the
question reaches.

.venv/bin/python bench/knowledge.py --json out.json    # first: a run, with its adapter
.venv/bin/python -m bench.stored out.json
"""

from __future__ import annotations

import argparse
import json
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from bench.documents import MEMORY_SETS, Document, load, mention, right

ROOT = Path(__file__).resolve().parent.parent


def value_in(statements: list[str], expect: str) -> tuple[str, re.Match[str]] | None:
    """The first statement that writes one of the expected forms, and where."""
    for alt in expect.split("|"):
        if alt.strip().lower() in ("yes", "no"):
            continue
        for s in statements:
            if found := mention(s, alt):
                return s, found
    return None


def predicted(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, text: str, start: int, end: int
) -> tuple[bool, bool]:
    """(adapter, base): every token of text[start:end] is the greedy next token."""
    enc = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    ids = enc["input_ids"]
    offsets = enc["offset_mapping"][0].tolist()
    span = [i for i, (s, e) in enumerate(offsets) if e > start and s < end]

    def reads(adapter: bool) -> bool:
        with torch.no_grad(), nullcontext() if adapter else model.disable_adapter():
            greedy = model(input_ids=ids).logits[0].argmax(-1)
        return all(i > 0 and int(greedy[i - 1]) == int(ids[0, i]) for i in span)

    return reads(True), reads(False)


def passage_of(doc: Document, passages: list[dict[str, Any]]) -> dict[str, Any]:
    words = set(doc.text.split())
    return max(passages, key=lambda p: len(words & set(p["text"].split())))


def measure(results: dict[str, Any], docs: list[Document], model_dir: Path) -> dict[str, Any]:
    """Per memory set: questions whose value a statement writes, stored by the adapter and by
    the base model, and answered right (as served) among those the adapter stores."""
    adapter_dir = Path(results["adapter_path"])
    passages = json.loads((adapter_dir / "dataset.json").read_text())["passages"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir)
    model.eval()
    by_slug = {d.slug: passage_of(d, passages) for d in docs}
    out: dict[str, Any] = {}
    for name in MEMORY_SETS:
        rows = [a for a in results["answers"] if a["set"] == name and a["doc"] in by_slug]
        n = stored = stored_base = answered = 0
        for a in rows:
            passage = by_slug[a["doc"]]
            title = passage["title"]
            lines = [
                s if not title or title in s else f"{title}: {s}" for s in passage["statements"]
            ]
            hit = value_in(lines, a["expect"])
            if hit is None:
                continue
            line, found = hit
            n += 1
            by_adapter, by_base = predicted(model, tokenizer, line, found.start(), found.end())
            stored += by_adapter
            stored_base += by_base
            answered += by_adapter and right(a["served"], a["expect"])
        out[name] = {
            "questions": n,
            "stored": stored,
            "stored_base": stored_base,
            "answered_of_stored": answered,
        }
    return out


def report(stored: dict[str, Any]) -> str:
    return "\n".join(
        f"  {name}: value in a statement {s['questions']}, stored by the adapter {s['stored']} "
        f"(base {s['stored_base']}), answered right as served {s['answered_of_stored']} of those"
        for name, s in stored.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="the JSON of a documents-suite run")
    parser.add_argument("--model", type=Path, default=ROOT / "var/models/SmolLM2-135M-Instruct")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    docs = load(ROOT / "bench" / "documents", unheaded=results.get("unheaded", False))
    print(report(measure(results, docs, args.model)))


if __name__ == "__main__":
    main()
