"""The gates' held-out questions for one consolidation's passages: those its dataset.json
holds against those the current code writes, each answered by the adapter and by the
base model closed-book, per passage (the numbers the per-passage gate compares).

.venv/bin/python bench/knowledge.py --json out.json     # first: a run, with its adapter
.venv/bin/python -m bench.heldout ADAPTER_DIR [--json held.json]   # "adapter_path" of out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path
from typing import Any

from consolidator.evaluate import ask, mean
from consolidator.heldout import HeldOut, held_out_questions
from daemon.config import EngineConfig
from daemon.engine.client import BASE_MODEL_NAME, EngineClient
from daemon.engine.process import ManagedEngine
from daemon.memory.language import Language

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = "held-out-bench"


async def scored(engine: EngineClient, held: list[HeldOut]) -> dict[str, Any]:
    questions = [h.question for h in held]
    by_adapter, by_base = await asyncio.gather(
        ask(engine, [ADAPTER] * len(held), questions),
        ask(engine, [BASE_MODEL_NAME] * len(held), questions),
    )
    return {
        "questions": len(held),
        "adapter": mean([h.score(a) for h, a in zip(held, by_adapter, strict=True)]),
        "base": mean([h.score(a) for h, a in zip(held, by_base, strict=True)]),
        "rows": [
            {"question": h.question, "expects": h.expects, "teacher": h.teacher, "adapter": a, "base": b}
            for h, a, b in zip(held, by_adapter, by_base, strict=True)
        ],
    }  # fmt: skip


async def compare(engine: EngineClient, adapter_dir: Path) -> list[dict[str, Any]]:
    await engine.load_adapter(ADAPTER, str(adapter_dir))
    lang = Language()
    dataset = json.loads((adapter_dir / "dataset.json").read_text())
    out = []
    for p in dataset["passages"]:
        trained = {t["question"] for t in p["trained"]}
        now = await held_out_questions(
            lang, engine, p["text"], p["statements"], trained, False, random.Random(0)
        )
        row = {
            "passage": p["statements"][0][:60],
            "run": await scored(engine, [HeldOut(**h) for h in p["held_out"]]),
            "now": await scored(engine, now),
        }
        out.append(row)
        print(
            f"{row['passage'][:50]:50}  "
            + "  ".join(
                f"{k}: {row[k]['questions']} q, adapter {row[k]['adapter']:.2f} "
                f"base {row[k]['base']:.2f}"
                for k in ("run", "now")
            ),
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("adapter_dir", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--model", type=Path, default=ROOT / "var" / "models" / "SmolLM2-135M-Instruct"
    )
    parser.add_argument("--port", type=int, default=8931)
    args = parser.parse_args()
    vllm = ManagedEngine(EngineConfig(port=args.port), args.model, args.adapter_dir.parent)

    async def run() -> list[dict[str, Any]]:
        await vllm.start()
        try:
            return await compare(vllm.client, args.adapter_dir)
        finally:
            await vllm.stop()

    rows = asyncio.run(run())
    for k in ("run", "now"):
        counts = [r[k]["questions"] for r in rows]
        below = sum(1 for r in rows if r[k]["questions"] and r[k]["adapter"] < r[k]["base"])
        print(
            f"{k}: {sum(counts)} questions, {counts.count(0)} passages with none, "
            f"{below} passages where the adapter is below the base model"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
