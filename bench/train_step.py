"""Seconds per training step of the default recipe, per autocast dtype, on this machine.

Why `dtype: auto` picks what it picks: one optimizer step of consolidator.train
(answer_loss with two KL-anchored replay rows, backward, AdamW) on a batch of the
recipe's size, timed in bfloat16 autocast and in float32. After `make model`:

    .venv/bin/python bench/train_step.py [--dtypes bfloat16,float32] [--steps 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consolidator.train import IGNORE, answer_loss, autocast, autocast_dtype
from daemon.config import TrainingConfig

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 120  # a typical row: prompt and answer, under max_seq_len
WARMUP_STEPS = 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument(
        "--model", type=Path, default=ROOT / "var" / "models" / "SmolLM2-135M-Instruct"
    )
    args = parser.parse_args()
    cfg = TrainingConfig()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base: Any = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lora = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, target_modules=cfg.target_modules, task_type="CAUSAL_LM"
    )
    model = get_peft_model(base.to(device), lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (cfg.batch_size, TOKENS), generator=generator).to(device)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : TOKENS // 2] = IGNORE  # the prompt half carries no loss
    anchored = torch.tensor([False] * (cfg.batch_size - 2) + [True] * 2, device=device)
    print(f"{device}, {torch.get_num_threads()} threads; auto = {autocast_dtype('auto', device)}")
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        seconds = []
        for _ in range(WARMUP_STEPS + args.steps):
            start = time.monotonic()
            with autocast(device, dtype):
                loss = answer_loss(model, ids, labels, mask, anchored, cfg.kl_weight)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds.append(time.monotonic() - start)
        timed = seconds[WARMUP_STEPS:]
        print(
            f"{name:>9}: median {statistics.median(timed):.2f} s a step "
            f"(min {min(timed):.2f}, max {max(timed):.2f}, {len(timed)} steps)"
        )


if __name__ == "__main__":
    main()
