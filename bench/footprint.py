"""Training memory: consolidator.footprint's estimate, and the peak measured on a GPU.

.venv/bin/python -m bench.footprint table
    the estimate for Llama-shaped 1B, 8B and 70B models (docs/DEPLOY.md's arithmetic)
python -m bench.footprint measure --tokenizer DIR [--sizes 135m,1b,8b]
    on a CUDA GPU: trains each size (random weights: memory does not depend on them)
    through consolidator.train.train_adapter and reports the peak next to the estimate
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from consolidator.data import Example
from consolidator.footprint import GIB, estimate, weight_dtype
from daemon.config import TrainingConfig

# Llama-shaped models of each size (the dimensions of SmolLM2-135M, Llama 3.2 1B,
# Llama 3.1 8B and Llama 3.1 70B).
SHAPES: dict[str, dict[str, Any]] = {
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                 tie_word_embeddings=True),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
               tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
               tie_word_embeddings=False),
    "70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                tie_word_embeddings=False),
}  # fmt: skip


def table(cfg: TrainingConfig) -> list[dict[str, Any]]:
    rows = []
    for size in ("1b", "8b", "70b"):
        f = estimate(LlamaConfig(**SHAPES[size]), cfg, torch.bfloat16)
        rows.append({"size": size, **{k: round(v, 2) if isinstance(v, float) else v
                                      for k, v in f.model_dump().items()}})  # fmt: skip
    return rows


def examples(tokens: int) -> list[Example]:
    """Facts and replay with answers long enough to fill max_seq_len: the peak case."""
    long = " ".join(["the brass key opens the north door"] * (tokens // 7))
    facts = [Example(question=f"What is item {i}?", answer=long, kind="fact") for i in range(12)]
    replay = [Example(question=f"Say {i}.", answer=long, kind="replay") for i in range(4)]
    return facts + replay


def measure(size: str, tokenizer: Path, cfg: TrainingConfig) -> dict[str, Any]:
    from consolidator.train import train_adapter

    dtype = weight_dtype(cfg.dtype, "cuda")
    config = LlamaConfig(**SHAPES[size])
    work = Path(tempfile.mkdtemp(prefix=f"footprint-{size}-"))
    try:
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.save_pretrained(work / "model")
        del model
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (tokenizer / name).exists():
                shutil.copy(tokenizer / name, work / "model" / name)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        started = time.monotonic()
        result = train_adapter(work / "model", examples(cfg.max_seq_len), cfg, work / "adapter")
        seconds = time.monotonic() - started
        est = estimate(config, cfg, dtype)
        return {
            "size": size,
            "weight_dtype": str(dtype),
            "estimate_gib": round(est.total_gib, 2),
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 2),
            "train_seconds": round(seconds, 1),
            "steps": result["steps"],
            "final_loss": round(result["final_loss"], 3),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.footprint")
    parser.add_argument("what", choices=["table", "measure"])
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--sizes", default="135m,1b,8b")
    args = parser.parse_args()
    cfg = TrainingConfig(epochs=1, min_steps=4)
    if args.what == "table":
        for row in table(cfg):
            print(json.dumps(row))
        return
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "bf16": torch.cuda.is_bf16_supported()}))
    for size in args.sizes.split(","):
        print(json.dumps(measure(size, args.tokenizer, cfg)), flush=True)


if __name__ == "__main__":
    main()
