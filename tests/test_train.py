"""Real LoRA training with PEFT on the bundled model: a stopped run resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from consolidator.checkpoint import Checkpoint
from consolidator.data import Example
from consolidator.train import train_adapter
from daemon.config import TrainingConfig

EXAMPLES = [
    Example(question=f"What is item {i}?", answer=f"Item {i} is a brass key.", kind="fact")
    for i in range(6)
] + [
    Example(question="What is two plus two?", answer="Two plus two is four.", kind="replay"),
    Example(question="Name a colour.", answer="Blue is a colour.", kind="replay"),
]
CONFIG = TrainingConfig(epochs=3, min_steps=0, batch_size=4, rank=4, alpha=8, learning_rate=1e-3)


class Preempted(Exception):
    pass


def weights(adapter: Path) -> dict[str, torch.Tensor]:
    return load_file(str(adapter / "adapter_model.safetensors"))


def test_a_stopped_run_resumes_from_its_checkpoint(model_dir: Path, tmp_path: Path) -> None:
    whole = train_adapter(model_dir, EXAMPLES, CONFIG, tmp_path / "whole")

    checkpoint = Checkpoint(tmp_path / "checkpoints", "k")
    checkpoint.open()

    def stop_after_first(epoch: int, loss: float, seconds: float) -> None:
        if epoch == 1:
            raise Preempted

    with pytest.raises(Preempted):
        train_adapter(model_dir, EXAMPLES, CONFIG, tmp_path / "first", stop_after_first, checkpoint)
    assert checkpoint.training_state is not None
    assert not (tmp_path / "first").exists()

    epochs: list[int] = []
    resumed = train_adapter(
        model_dir,
        EXAMPLES,
        CONFIG,
        tmp_path / "resumed",
        lambda epoch, loss, seconds: epochs.append(epoch),
        checkpoint,
    )
    assert epochs == [2, 3]
    assert resumed["resumed_from_epoch"] == 1 and whole["resumed_from_epoch"] == 0
    assert resumed["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-3)
    expected, got = weights(tmp_path / "whole"), weights(tmp_path / "resumed")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-3, atol=1e-5, msg=name)
