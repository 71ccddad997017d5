"""Adapters that hold what was forgotten leave the disk and the engines.

An adapter's manifest names the passages and facts it was trained on. Once
one of them is forgotten, every adapter holding it is retired: unloaded from
the engines, and its directory (weights, dataset, manifest, routing vectors)
and its run's log deleted. The serving adapter stays until a replacement
without it is promoted (the next consolidation leaves forgotten memory out),
or goes at once when asked (``now``): the newest clean adapter that was
promoted serves instead, or the base model.
"""

from __future__ import annotations

import logging
import shutil

from pydantic import BaseModel, Field

from daemon.engine.adapters import AdapterInvalid, adapter_dir, read_manifest, versions_on_disk
from daemon.engine.client import EngineError
from daemon.engine.swap import Swapper
from daemon.memory.records import FactStatus, RunState
from daemon.memory.store import Store
from daemon.scope import Scope

log = logging.getLogger("memoryd.retirement")


class Retired(BaseModel):
    """What forgetting did to the adapters."""

    retired: list[str] = Field(default_factory=list, description="adapters deleted")
    serving: str | None = Field(None, description="the adapter serving now (None: base model)")
    until_replaced: str | None = Field(
        None,
        description="the serving adapter holds forgotten memory until a replacement is promoted",
    )


async def retire(scope: Scope, store: Store, swapper: Swapper, now: bool = False) -> Retired:
    """Delete every adapter on disk that holds forgotten memory (the serving one only if ``now``)."""
    held = await _holding_forgotten(scope, store)
    active = swapper.active.version if swapper.active else None
    out = Retired()
    if active in held:
        if now:
            await _fall_back(scope, store, swapper, set(held))
        else:
            out.until_replaced = scope.adapter_name(active)
    serving = swapper.active.version if swapper.active else None
    for version in held:
        if version == serving:
            continue
        await swapper.drop(version)
        shutil.rmtree(adapter_dir(scope.adapters_dir, version), ignore_errors=True)
        (scope.logs_dir / f"consolidation-{version}.log").unlink(missing_ok=True)
        out.retired.append(scope.adapter_name(version))
    out.serving = swapper.active.name if swapper.active else None
    if out.retired:
        log.info("retired %s: they held forgotten memory", ", ".join(out.retired))
    return out


async def _holding_forgotten(scope: Scope, store: Store) -> list[int]:
    """Versions on disk whose manifest names a forgotten passage or fact.

    The manifest is read, not verified: a copy whose weights were damaged still
    holds what it was trained on.
    """
    held = []
    for version in versions_on_disk(scope.adapters_dir):
        try:
            manifest = read_manifest(adapter_dir(scope.adapters_dir, version))
        except AdapterInvalid:
            continue  # no readable manifest: what it holds is unknown; `memoryd adapters` shows it
        passages = await store.passages_by_id(manifest.passage_ids)
        facts = await store.facts_by_id(manifest.fact_ids)
        statuses = [p.status for p in passages] + [f.status for f in facts]
        if FactStatus.forgotten in statuses:
            held.append(version)
    return held


async def _fall_back(scope: Scope, store: Store, swapper: Swapper, held: set[int]) -> None:
    """Serve the newest promoted adapter that holds nothing forgotten, else the base model."""
    for version in reversed(versions_on_disk(scope.adapters_dir)):
        run = await store.run(version)
        if version in held or run is None or run.state != RunState.promoted:
            continue
        try:
            await swapper.promote(version)
            await store.event(version, "activated", by="forgetting")
            return
        except (AdapterInvalid, EngineError):
            log.warning("falling back to %s failed", scope.adapter_name(version), exc_info=True)
    await swapper.deactivate()
