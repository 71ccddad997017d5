"""A run's progress on disk, so a run that was killed or stopped resumes.

``state/checkpoints/<key>/`` holds the dataset (generating it is the part that
needs the engine) and the training state after the last finished epoch. The key
names what the run would produce: the fact set, the training config and the
base model; a later run with the same key picks up where the last one stopped.
Every file is written to a temporary name and renamed, so a checkpoint is
either whole or absent. Only one run resumes: other keys' leftovers are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from consolidator.data import Dataset
from daemon.config import TrainingConfig

DATASET = "dataset.json"
TRAINING_STATE = "training.pt"


def checkpoint_key(fact_ids: list[str], training: TrainingConfig, model_dir: Path) -> str:
    blob = json.dumps([sorted(fact_ids), training.model_dump(mode="json"), str(model_dir)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Checkpoint:
    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.dir = root / key

    def open(self) -> None:
        """Create this run's directory and drop any other run's leftovers."""
        if self.root.exists():
            for other in self.root.iterdir():
                if other != self.dir:
                    shutil.rmtree(other, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    def load_dataset(self) -> Dataset | None:
        path = self.dir / DATASET
        return Dataset.model_validate_json(path.read_text()) if path.exists() else None

    def save_dataset(self, dataset: Dataset) -> None:
        self._write(DATASET, lambda tmp: tmp.write_text(dataset.model_dump_json()))

    @property
    def training_state(self) -> Path | None:
        path = self.dir / TRAINING_STATE
        return path if path.exists() else None

    def save_training_state(self, write: Callable[[Path], object]) -> None:
        self._write(TRAINING_STATE, write)

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _write(self, name: str, write: Callable[[Path], object]) -> None:
        tmp = self.dir / f".{name}.tmp"
        try:
            write(tmp)
            os.replace(tmp, self.dir / name)
        finally:
            tmp.unlink(missing_ok=True)
