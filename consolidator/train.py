"""Train a fresh LoRA adapter on a dataset, from the base model, top to bottom.

Chat-formatted examples with the loss on the answer tokens only; with
``self_distill_every`` also the student's own answers scored by the teacher
(consolidator.selfdistill). Every knob comes from TrainingConfig and is recorded
in the adapter's manifest. The adapter is saved with PEFT's save_pretrained,
which vLLM loads at runtime. After every epoch but the last the whole training
state goes to the checkpoint, and a run that finds one there continues from it
with the same batches it would have seen.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from consolidator.checkpoint import Checkpoint
from consolidator.data import Example
from consolidator.footprint import weight_dtype
from consolidator.questions import teacher_context
from consolidator.selfdistill import self_distill_loss
from daemon.config import TrainingConfig

IGNORE = -100


Encoded = tuple[list[int], list[int], bool]  # ids, labels, anchored to the base model


def encode(tokenizer: PreTrainedTokenizerBase, example: Example, max_len: int) -> Encoded:
    """Token ids and labels; the prompt (chat template up to the answer) is masked out."""
    if example.kind == "raw":
        ids = tokenizer(example.answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        ids = ids[:max_len]
        return ids, list(ids), False
    messages = [{"role": "user", "content": example.question}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    answer = example.answer + ("<|im_end|>\n" if example.finished else "")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + answer_ids)[:max_len]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_len]
    return ids, labels, example.kind == "replay"


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def batches(encoded: list[Encoded], size: int, pad_id: int, rng: random.Random) -> list[Batch]:
    """Shuffled batches of similar lengths: less padding, so less work per epoch.

    Examples are sorted by length only within windows of a few batches, so each
    batch is still a random draw of facts and replay, and the batch order is
    shuffled again.
    """
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = size * 8
    order = [
        i
        for start in range(0, len(order), window)
        for i in sorted(order[start : start + window], key=lambda i: len(encoded[i][0]))
    ]
    groups = [order[start : start + size] for start in range(0, len(order), size)]
    rng.shuffle(groups)
    out = []
    for group in groups:
        chunk = [encoded[i] for i in group]
        width = max(len(ids) for ids, _, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        labels = torch.full((len(chunk), width), IGNORE)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        anchored = torch.tensor([a for _, _, a in chunk])
        for row, (i, lab, _) in enumerate(chunk):
            ids[row, : len(i)] = torch.tensor(i)
            labels[row, : len(lab)] = torch.tensor(lab)
            mask[row, : len(i)] = 1
        out.append((ids, labels, mask, anchored))
    return out


def answer_loss(
    model: PeftModel,
    ids: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    anchored: torch.Tensor,
    kl_weight: float,
) -> torch.Tensor:
    """Cross-entropy on fact answers; KL to the base model on replay answers.

    Only answer positions go through the 49k-token output projection (prompt
    positions carry no loss, and that projection is a large share of the work).
    Replay rows (``anchored``) match the base model's whole next-token
    distribution, not just its greedy answer: a far tighter hold on everything
    the adapter should leave alone.
    """
    causal_lm: Any = model.get_base_model()
    targets = labels[:, 1:]
    keep = targets != IGNORE
    hidden = causal_lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
    logits = causal_lm.lm_head(hidden[:, :-1][keep]).float()
    row_anchored = anchored[:, None].expand_as(targets)[keep]
    ce = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")
    if not row_anchored.any():
        return ce.mean()
    rows = anchored.nonzero().squeeze(1)  # the base model runs on replay rows only
    with torch.no_grad(), model.disable_adapter():
        base_hidden = causal_lm.model(input_ids=ids[rows], attention_mask=mask[rows])
        base_logits = causal_lm.lm_head(base_hidden.last_hidden_state[:, :-1][keep[rows]]).float()
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(logits[row_anchored], -1),
        torch.log_softmax(base_logits, -1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    per_token = ce.clone()
    per_token[row_anchored] = kl * kl_weight
    return per_token.mean()


def warmup_then_linear_decay(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: a linear ramp over ``warmup`` steps, then linear to zero."""
    if step < warmup:
        return (step + 1) / warmup  # ramp: the fresh LoRA's first updates stay small
    return max(0.0, (total - step) / max(1, total - warmup))  # decay: settle by the end


def autocast_dtype(setting: str, device: str) -> torch.dtype:
    """bfloat16 on GPUs that have it (float16 on older ones) and on CPUs with AMX; else float32.

    Without AMX tiles a bfloat16 autocast step on the CPU is slower than a float32
    one: the casts cost more than the bfloat16 matmuls save (bench/train_step.py:
    7.2 s against 4.0 s a step with AVX512-BF16 but no AMX; docs/BENCHMARKS.md).
    """
    if setting != "auto":
        dtype: torch.dtype = getattr(torch, setting)
        return dtype
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.cpu._is_amx_tile_supported() else torch.float32


def autocast(device: str, dtype: torch.dtype) -> torch.autocast:
    """Autocast to ``dtype``; float32 means none (CPU autocast does not take it)."""
    return torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32)


def general_kl(model: PeftModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> float:
    """Mean KL(base || adapter) of the next-token distributions over general prompts.

    Forgetting tracks this forward KL on text the adapter was not trained on
    (RL's Razor): the retention probes' questions, read up to where the answer
    would start. Only the question's own positions count, not the chat template's.
    """
    if not prompts:
        return 0.0
    causal_lm: Any = model.get_base_model()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows, tails = [], []
    for p in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
        )
        rows.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        tails.append(len(tokenizer(p, add_special_tokens=False)["input_ids"]) + 4)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (r, tail) in enumerate(zip(rows, tails, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        keep[i, max(0, len(r) - tail) : len(r)] = True
    ids, mask, keep = ids.to(model.device), mask.to(model.device), keep.to(model.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        adapted = causal_lm.lm_head(
            causal_lm.model(input_ids=ids, attention_mask=mask).last_hidden_state[keep]
        )
        with model.disable_adapter():
            base = causal_lm.lm_head(
                causal_lm.model(input_ids=ids, attention_mask=mask).last_hidden_state[keep]
            )
    model.train(was_training)
    log_a, log_b = torch.log_softmax(adapted.float(), -1), torch.log_softmax(base.float(), -1)
    return float((log_b.exp() * (log_b - log_a)).sum(-1).mean())


def train_adapter(
    model_dir: Path,
    examples: list[Example],
    cfg: TrainingConfig,
    out_dir: Path,
    on_epoch: Callable[[int, float, float], None] = lambda epoch, loss, seconds: None,
    checkpoint: Checkpoint | None = None,
    contexts: dict[str, str] | None = None,
    general_prompts: list[str] | None = None,
    on_step: Callable[[int, int], None] = lambda step, total: None,
    inspect: Callable[[int, PeftModel], None] = lambda epoch, model: None,
) -> dict[str, float]:
    """Train and save to ``out_dir``; returns final loss, timing and the KL to the base model.

    ``contexts``: passage id -> the passage as the teacher reads it, for self-distillation.
    ``general_prompts``: prompts never trained on, for ``general_kl``.
    ``on_step``: called after every optimizer step with (step, total), for progress.
    ``inspect``: called after every epoch with the model in training (bench/ablation.py scores it).
    """
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = autocast_dtype(cfg.dtype, device)
    # 16-bit frozen weights on GPUs halve the run's largest fixed cost; PEFT keeps the
    # LoRA weights (the only trained ones) in float32.
    base: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=weight_dtype(cfg.dtype, device)
    )
    model = get_peft_model(
        base.to(device),
        LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    encoded = [encode(tokenizer, e, cfg.max_seq_len) for e in examples]
    distilled = [
        (e.question, teacher_context(contexts[e.passage_id], e.focus))
        for e in examples
        if e.kind == "fact" and contexts and e.passage_id in contexts
    ]
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    # A handful of facts makes a short epoch: train for at least min_steps.
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    total_steps = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
    )
    warmup = max(1, int(total_steps * cfg.warmup_fraction))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_then_linear_decay(step, warmup, total_steps)
    )

    first_epoch = 0
    if checkpoint and checkpoint.training_state:
        state = torch.load(checkpoint.training_state, map_location=device, weights_only=True)
        set_peft_model_state_dict(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        first_epoch = int(state["epoch"])

    def save_state(epoch: int) -> Callable[[Path], None]:
        state = {
            "epoch": epoch,
            "adapter": get_peft_model_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng.getstate(),
            "torch_rng": torch.get_rng_state(),
        }
        return lambda path: torch.save(state, path)

    # float16 gradients underflow without loss scaling; bfloat16 and float32 need none.
    scaler = torch.amp.GradScaler(device, enabled=device == "cuda" and dtype == torch.float16)
    model.train()
    started = time.monotonic()
    loss_value = float("nan")
    distill_losses: list[float] = []
    step = first_epoch * steps_per_epoch
    for epoch in range(first_epoch, epochs):
        epoch_start = time.monotonic()
        losses = []
        for ids, labels, mask, anchored in batches(encoded, cfg.batch_size, pad_id, rng):
            ids, labels, mask, anchored = (t.to(device) for t in (ids, labels, mask, anchored))
            with autocast(device, dtype):
                loss = answer_loss(model, ids, labels, mask, anchored, cfg.kl_weight)
                if cfg.self_distill_every and distilled and step % cfg.self_distill_every == 0:
                    chosen = rng.sample(distilled, min(cfg.batch_size, len(distilled)))
                    sd = self_distill_loss(
                        model,
                        tokenizer,
                        [q for q, _ in chosen],
                        [c for _, c in chosen],
                        max_new_tokens=cfg.self_distill_tokens,
                    )
                    loss = loss + cfg.self_distill_weight * sd
                    distill_losses.append(sd.item())
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            on_step(step, total_steps)
        loss_value = sum(losses) / len(losses)
        if checkpoint and epoch + 1 < epochs:
            checkpoint.save_training_state(save_state(epoch + 1))
        on_epoch(epoch + 1, loss_value, time.monotonic() - epoch_start)
        inspect(epoch + 1, model)

    kl = general_kl(model, tokenizer, general_prompts or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    return {
        "final_loss": loss_value,
        "train_seconds": time.monotonic() - started,
        "steps": float(total_steps),
        "resumed_from_epoch": float(first_epoch),
        "epochs": float(epochs),
        "self_distill_kl": sum(distill_losses) / len(distill_losses) if distill_losses else 0.0,
        "general_kl": kl,
    }
