"""A training run's memory, estimated from the model before it loads; a run that would not fit
is refused before it starts, with the numbers."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from redis.asyncio import Redis
from transformers import AutoConfig

from consolidator.footprint import GIB, estimate
from consolidator.run import consolidate
from consolidator.worker import work
from daemon.config import ConsolidationConfig, EngineConfig, Settings, TrainingConfig
from daemon.contract import EXIT_FAILED
from daemon.engine.client import EngineClient
from daemon.memory.records import RunState
from daemon.memory.store import Store, connect
from tests.conftest import RedisServer

MODEL = Path(os.environ.get("MEMORYD_TEST_MODEL", "var/models/SmolLM2-135M-Instruct"))


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = connect(redis_server.url)
    yield client
    await client.aclose()


def test_estimate_counts_the_models_weights_and_scales_with_the_batch() -> None:
    config = AutoConfig.from_pretrained(MODEL)
    fp32 = estimate(config, TrainingConfig(), torch.float32)
    # The bundled model is stored in bfloat16: float32 weights take twice its file.
    stored = sum(f.stat().st_size for f in MODEL.glob("*.safetensors")) / GIB
    assert fp32.weights_gib == pytest.approx(2 * stored, rel=0.02)
    assert estimate(config, TrainingConfig(), torch.bfloat16).weights_gib == pytest.approx(
        fp32.weights_gib / 2
    )
    double = estimate(config, TrainingConfig(batch_size=16), torch.float32)
    assert double.activations_gib == pytest.approx(2 * fp32.activations_gib)
    # rank 16 on q,k,v,o,gate,up,down of 30 layers (hidden 576, kv 192, intermediate 1536)
    per_layer = 16 * ((576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3)
    assert fp32.lora_parameters == 30 * per_layer


async def test_run_over_its_memory_budget_is_refused_before_it_starts(
    redis: Redis, tmp_path: Path
) -> None:
    store = Store(redis, "t")
    settings = Settings(
        state_dir=tmp_path,
        engine=EngineConfig(model=str(MODEL)),
        consolidation=ConsolidationConfig(training=TrainingConfig(memory_budget_gib=0.5)),
    )
    run = await store.new_run("idle", "fp")
    engine = EngineClient("http://127.0.0.1:9")  # never called: nothing runs past the check
    try:
        code = await work(store, run.id, lambda r: consolidate(settings, store, engine, r))
    finally:
        await engine.aclose()
    assert code == EXIT_FAILED
    failed = await store.run(run.id)
    assert failed is not None and failed.state == RunState.failed and failed.error
    need = re.search(r"would need about ([\d.]+) GiB", failed.error)
    assert need and float(need.group(1)) > 0.5, failed.error
    assert "but 0.5 GiB is available (consolidation.training.memory_budget_gib)" in failed.error
    assert [s.name for s in failed.steps] == ["fit"]  # no facts selected, no data built
    assert not (tmp_path / "adapters").exists()
