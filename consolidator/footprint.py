"""How much memory a training run needs, worked out from the model's config before it loads.

A run that cannot fit fails at once with the numbers, rather than after minutes
of data building with an out-of-memory error (or, on a GPU shared with vLLM,
by taking memory vLLM counted on). The estimate errs high: every position is
counted as an answer position, and the allocator's slack is added on top.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from pydantic import BaseModel
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from daemon.config import TrainingConfig

GIB = 2**30
FIXED_GIB = 1.0  # CUDA context / interpreter and libraries
SLACK = 0.10  # allocator fragmentation


class DoesNotFit(Exception):
    """A training run refused before it started: it would not fit in the memory it may use."""


class Footprint(BaseModel):
    weights_gib: float
    adapter_gib: float  # LoRA weights, gradients and AdamW's two moments, in float32
    activations_gib: float  # kept for the backward pass, the output logits included
    total_gib: float
    weight_dtype: str
    parameters: int
    lora_parameters: int

    def describe(self) -> str:
        return (
            f"{self.total_gib:.1f} GiB ({self.weights_gib:.1f} GiB weights in "
            f"{self.weight_dtype}, {self.adapter_gib:.2f} GiB adapter and optimizer, "
            f"{self.activations_gib:.1f} GiB activations, plus {FIXED_GIB:g} GiB and "
            f"{SLACK:.0%} overhead)"
        )


def weight_dtype(setting: str, device: str) -> torch.dtype:
    """The frozen base model's dtype: 16-bit on GPUs (bfloat16 where supported), else float32.

    On the CPU memory is rarely the limit and the recipe was tuned with float32
    weights (autocast runs the matmuls in bfloat16 where the CPU has AMX).
    """
    if device != "cuda":
        return torch.float32
    if setting in ("bfloat16", "float16"):
        chosen: torch.dtype = getattr(torch, setting)
        return chosen
    if setting == "float32":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def estimate(config: PretrainedConfig, cfg: TrainingConfig, dtype: torch.dtype) -> Footprint:
    """Peak memory of train_adapter on one device, from the architecture alone."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    parameters = sum(p.numel() for p in model.parameters())
    lora = sum(
        cfg.rank * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in cfg.target_modules
    )
    size = torch.finfo(dtype).bits // 8
    hidden, layers = config.hidden_size, config.num_hidden_layers
    inner = getattr(config, "intermediate_size", 4 * hidden)
    tokens = cfg.batch_size * cfg.max_seq_len
    # Per token and layer: attention and MLP inputs/outputs in 16 bits (the MLP's four
    # intermediate-size tensors dominate), and float32 copies of the residual stream.
    per_token_layer = (8 * hidden + 4 * inner) * 2 + 8 * hidden
    # Output logits in float32: the adapter's, their log-softmax and gradient, and the
    # base model's for the KL on replay rows.
    per_token_logits = 6 * 4 * config.vocab_size
    activations = tokens * (layers * per_token_layer + per_token_logits)
    weights, adapter = parameters * size, lora * 16
    total = (weights + adapter + activations) * (1 + SLACK) + FIXED_GIB * GIB
    return Footprint(
        weights_gib=weights / GIB,
        adapter_gib=adapter / GIB,
        activations_gib=activations / GIB,
        total_gib=total / GIB,
        weight_dtype=str(dtype).removeprefix("torch."),
        parameters=parameters,
        lora_parameters=lora,
    )


def available_gib(device: str) -> tuple[float, str]:
    """Memory free for training now, and where that number comes from."""
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return free / GIB, "free on the GPU"
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024 / GIB, "MemAvailable on this host"


def check(model_dir: Path, cfg: TrainingConfig, device: str) -> Footprint:
    """The run's footprint; DoesNotFit with both numbers when it exceeds the budget."""
    footprint = estimate(
        AutoConfig.from_pretrained(model_dir), cfg, weight_dtype(cfg.dtype, device)
    )
    if cfg.memory_budget_gib:
        budget, source = cfg.memory_budget_gib, "consolidation.training.memory_budget_gib"
    else:
        budget, source = available_gib(device)
    if footprint.total_gib > budget:
        raise DoesNotFit(
            f"training {os.path.basename(model_dir)} would need about {footprint.describe()}, "
            f"but {budget:.1f} GiB is available ({source}); lower training.batch_size or "
            "max_seq_len, or give the consolidator more memory"
        )
    return footprint
