"""One consolidation run, as a child process of the daemon (or a worker elsewhere).

claim the run -> select facts -> build data -> train -> write adapter vN -> evaluate
-> decide. Every step is recorded on the run in Redis and in its event stream;
the verdict is the run's state (passed: the daemon promotes it; rejected;
failed), written through daemon.memory.lifecycle and repeated as the exit code
(daemon.contract).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from consolidator import footprint
from consolidator.checkpoint import Checkpoint, checkpoint_key
from consolidator.data import Dataset, build_dataset, probe_set
from consolidator.evaluate import evaluate
from consolidator.train import autocast_dtype, train_adapter
from consolidator.worker import work
from consolidator.yielding import YieldingEngine
from daemon import logs
from daemon.config import Settings, TrainingConfig
from daemon.contract import EXIT_PASSED, EXIT_REJECTED, WorkerArgs
from daemon.engine.adapters import MANIFEST, adapter_dir, file_hashes, staged
from daemon.engine.client import EngineClient
from daemon.memory.records import (
    AdapterManifest,
    Consolidation,
    Fact,
    FactStatus,
    Passage,
    RunState,
    Step,
    now,
)
from daemon.memory.relevance import ROUTING_FILE, Embedder, Relevance
from daemon.memory.store import Store, connect, fingerprint
from daemon.scope import Scope

log = logging.getLogger("memoryd.consolidator")
T = TypeVar("T")


class Recorder:
    """Keeps the run record and the event stream up to date, step by step."""

    def __init__(self, store: Store, run: Consolidation) -> None:
        self.store = store
        self.run = run

    async def step(self, name: str, work: Awaitable[T]) -> T:
        step = Step(name=name, started_at=now())
        self.run.steps.append(step)
        await self.store.save_progress(self.run)
        await self.store.event(self.run.id, name, state="started")
        started = time.monotonic()
        result = await work
        step.seconds = round(time.monotonic() - started, 3)
        await self.store.save_progress(self.run)
        await self.store.event(self.run.id, name, state="done", seconds=step.seconds)
        return result


class TrainingProgress:
    """Training's step of total on the event log, at most once a second, with an ETA.

    Called in the training thread; the dashboard and ``consolidate --wait`` show
    these numbers as they are, so both agree.
    """

    def __init__(
        self, store: Store, run_id: int, loop: asyncio.AbstractEventLoop, every_s: float = 1.0
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.loop = loop
        self.every_s = every_s
        self._origin: tuple[float, int] | None = None
        self._sent_at = 0.0

    def __call__(self, step: int, total: int) -> None:
        at = time.monotonic()
        if self._origin is None:
            self._origin = (at, step)  # a resumed run starts mid-way: rate from here
        elif step < total and at - self._sent_at < self.every_s:
            return
        self._sent_at = at
        started, first = self._origin
        done = step - first
        eta = round((total - step) * (at - started) / done, 1) if done else None
        event = self.store.event(
            self.run_id, "progress", phase="train", completed=step, total=total, eta_s=eta
        )
        asyncio.run_coroutine_threadsafe(event, self.loop).result()


async def consolidate(
    settings: Settings,
    store: Store,
    engine: EngineClient,
    run: Consolidation,
    scope: Scope | None = None,
) -> int:
    """``scope``: whose memory (default: the default tenant's); ``store`` is built on its keys."""
    scope = scope or Scope.of(settings)
    rec = Recorder(store, run)
    cfg = settings.consolidation
    version = run.id
    name = scope.adapter_name(version)
    final_dir = adapter_dir(scope.adapters_dir, version)
    model_dir = settings_model_dir(settings)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    fits = await rec.step(
        "fit", asyncio.to_thread(footprint.check, model_dir, cfg.training, device)
    )
    rec.run.steps[-1].detail.update(
        estimated_gib=round(fits.total_gib, 2),
        weight_dtype=fits.weight_dtype,
        autocast=str(autocast_dtype(cfg.training.dtype, device)).removeprefix("torch."),
        device=device,
    )
    selected = await rec.step("select", store.eligible(cfg.min_conversations))
    run.passage_ids = [p.id for p, _ in selected]
    run.fact_ids = [f.id for _, facts in selected for f in facts if f.status.active]
    rec.run.steps[-1].detail.update(passages=len(selected), facts=len(run.fact_ids))
    run.fingerprint = fingerprint(run.passage_ids + run.fact_ids)
    await store.set_last_attempt(run.fingerprint)
    if not selected:
        return await reject(store, run, ["no passage recurred in enough conversations"])
    previous = {p.id for p, _ in selected if p.status == FactStatus.consolidated}
    checkpoint = Checkpoint(
        scope.checkpoints_dir,
        checkpoint_key(run.passage_ids + run.fact_ids, cfg.training, model_dir),
    )
    checkpoint.open()

    embedder = Embedder()
    dataset, reused = await rec.step(
        "data", dataset_for(checkpoint, selected, engine, cfg.training, embedder)
    )
    rec.run.steps[-1].detail.update(dataset.counts(), from_checkpoint=reused)

    async def on_epoch(epoch: int, loss: float, seconds: float) -> None:
        log.info("run %s epoch %s: loss %.4f in %.0fs", run.id, epoch, loss, seconds)
        run.metrics[f"loss_epoch_{epoch}"] = round(loss, 4)
        await store.event(
            run.id, "epoch", epoch=epoch, loss=round(loss, 4), seconds=round(seconds, 1)
        )

    loop = asyncio.get_running_loop()
    statements = [s for p in dataset.passages for s in p.statements]
    with staged(final_dir) as partial_dir:  # vN exists whole or not at all
        train_metrics = await rec.step(
            "train",
            asyncio.to_thread(
                train_adapter,
                model_dir,
                dataset.examples,
                cfg.training,
                partial_dir,
                lambda epoch, loss, secs: asyncio.run_coroutine_threadsafe(
                    on_epoch(epoch, loss, secs), loop
                ).result(),
                checkpoint,
                {p.passage_id: p.text for p in dataset.passages},
                [p.question for p in probe_set()],
                TrainingProgress(store, run.id, loop),
            ),
        )
        if train_metrics["resumed_from_epoch"]:
            rec.run.steps[-1].detail["resumed_from_epoch"] = int(
                train_metrics["resumed_from_epoch"]
            )
        run.metrics.update({k: round(v, 4) for k, v in train_metrics.items()})

        vectors = await asyncio.to_thread(embedder.embed, dataset.routing_texts())
        np.save(partial_dir / ROUTING_FILE, vectors)
        (partial_dir / "dataset.json").write_text(dataset.model_dump_json(indent=1))
        manifest = AdapterManifest(
            version=version,
            name=name,
            base_model=str(model_dir),
            created_at=now(),
            passage_ids=run.passage_ids,
            fact_ids=run.fact_ids,
            facts=statements,
            routing=ROUTING_FILE,
            examples=dataset.counts(),
            training=cfg.training.model_dump(),
            metrics=dict(run.metrics),
            files=file_hashes(partial_dir),
        )
        (partial_dir / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    checkpoint.discard()
    run.adapter, run.adapter_path = name, str(final_dir)

    await engine.load_adapter(name, str(final_dir.resolve()))
    relevance = Relevance(vectors, settings.routing_threshold)

    def routes(questions: list[str]) -> list[bool]:
        if settings.routing == "always" or not questions:
            return [True] * len(questions)
        return [relevance.covers(v) for v in embedder.embed(questions)]

    result = await rec.step(
        "evaluate",
        evaluate(engine, name, dataset, previous, cfg.gates, routes, run.metrics["general_kl"]),
    )
    run.metrics.update({k: round(v, 4) for k, v in result.metrics.items()})
    run.gates = result.gates
    rec.run.steps[-1].detail["per_passage"] = result.per_passage
    if result.passed:
        await store.transition(run, RunState.passed, detail=result.metrics)
        return EXIT_PASSED
    await engine.unload_adapter(name)
    reasons = [
        f"{g.name} {g.value:.2f} {'above' if g.name == 'passages_below_base' else 'below'} "
        f"{g.threshold:.2f}"
        for g in result.gates
        if not g.passed
    ]
    return await reject(store, run, reasons + result.failures[:10])


async def dataset_for(
    checkpoint: Checkpoint,
    selected: list[tuple[Passage, list[Fact]]],
    engine: EngineClient,
    training: TrainingConfig,
    embedder: Embedder,
) -> tuple[Dataset, bool]:
    """The checkpoint's dataset when a run for the same memory got that far, else a new one."""
    dataset = checkpoint.load_dataset()
    if dataset is not None:
        return dataset, True
    dataset = await build_dataset(selected, engine, training, embedder)
    checkpoint.save_dataset(dataset)
    return dataset, False


async def reject(store: Store, run: Consolidation, reasons: list[str]) -> int:
    await store.transition(run, RunState.rejected, reasons=reasons)
    return EXIT_REJECTED


def settings_model_dir(settings: Settings) -> Path:
    from daemon.bundled_model import bundled_model_dir

    return (
        Path(settings.engine.model)
        if settings.engine.model
        else bundled_model_dir(settings.models_dir)
    )


async def main_async(settings: Settings, args: WorkerArgs) -> int:
    redis = connect(args.redis_url, settings.redis)
    scope = Scope.of(settings, args.tenant)
    store = Store(redis, scope.prefix)
    engine = YieldingEngine(args.engine_url)
    engine.install()
    try:
        return await work(
            store, args.run_id, lambda run: consolidate(settings, store, engine, run, scope)
        )
    finally:
        await engine.aclose()
        await redis.aclose()


def main() -> None:
    args = WorkerArgs.parse()
    settings = Settings.model_validate(json.loads(args.settings.read_text()))
    logs.configure("info", settings.log_format)
    raise SystemExit(asyncio.run(main_async(settings, args)))
