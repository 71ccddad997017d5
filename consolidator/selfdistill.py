"""On-policy self-distillation: the student answers, the teacher with the passage grades each token.

Supervised targets teach the teacher's wording; they say nothing about the
answers the student itself would give. Here the adapter (the student, no
passage in context) samples its own answer to a question about a passage, and
the base model with the whole passage in context (the teacher) scores every
token of it: the loss is the per-token KL from the student's next-token
distribution to the teacher's on the student's own sample (reverse KL, as in
self-distillation fine-tuning, arXiv 2601.19897). The student is pulled
towards what it would say if it had read the passage, on the states it
actually reaches, and away from nothing else, which is why it forgets less
than training on fixed targets.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

IGNORE = -100


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def _left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask


def _right_padded(
    prompts: list[list[int]], answers: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, attention mask, and the positions whose next token is an answer token."""
    rows = [p + a for p, a in zip(prompts, answers, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    predicts = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        ids[i, : len(p) + len(a)] = torch.tensor(p + a)
        mask[i, : len(p) + len(a)] = 1
        predicts[i, len(p) - 1 : len(p) + len(a) - 1] = True
    return ids, mask, predicts


def sample_answers(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    max_new_tokens: int,
    temperature: float,
) -> list[list[int]]:
    """The student's own answers (no passage in context), up to and including its end token."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompts = [_prompt_ids(tokenizer, [{"role": "user", "content": q}]) for q in questions]
    ids, mask = _left_padded(prompts, pad_id)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_p=None,
            top_k=None,
            pad_token_id=pad_id,
        )
    model.train(was_training)
    answers = []
    for row in out[:, ids.shape[1] :].tolist():
        kept = []
        for tok in row:
            kept.append(tok)
            if tok == tokenizer.eos_token_id:
                break
        answers.append(kept)
    return answers


def self_distill_loss(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    passages: list[str],
    max_new_tokens: int = 32,
    temperature: float = 0.7,
) -> torch.Tensor:
    """Mean per-token KL(student || teacher with the passage) over the student's own answers."""
    device = model.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    answers = sample_answers(model, tokenizer, questions, max_new_tokens, temperature)
    keep = [i for i, a in enumerate(answers) if a]
    if not keep:
        return torch.zeros((), device=device, requires_grad=True)
    answers = [answers[i] for i in keep]
    student_prompts = [
        _prompt_ids(tokenizer, [{"role": "user", "content": questions[i]}]) for i in keep
    ]
    teacher_prompts = [
        _prompt_ids(
            tokenizer,
            [{"role": "system", "content": passages[i]}, {"role": "user", "content": questions[i]}],
        )
        for i in keep
    ]
    causal_lm: Any = model.get_base_model()
    s_ids, s_mask, s_pred = _right_padded(student_prompts, answers, pad_id)
    t_ids, t_mask, t_pred = _right_padded(teacher_prompts, answers, pad_id)
    hidden = causal_lm.model(input_ids=s_ids.to(device), attention_mask=s_mask.to(device))
    student = torch.log_softmax(
        causal_lm.lm_head(hidden.last_hidden_state[:, :-1][s_pred.to(device)]).float(), -1
    )
    with torch.no_grad(), model.disable_adapter():
        t_hidden = causal_lm.model(input_ids=t_ids.to(device), attention_mask=t_mask.to(device))
        teacher = torch.log_softmax(
            causal_lm.lm_head(t_hidden.last_hidden_state[:, :-1][t_pred.to(device)]).float(), -1
        )
    # Reverse KL at each of the student's tokens: sum_v p_s (log p_s - log p_t).
    kl = (student.exp() * (student - teacher)).sum(-1)
    return kl.mean()
