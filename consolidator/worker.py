"""A consolidator's hold on its run: claim it, run it only while it is queued, record an error.

The daemon's child and a worker elsewhere go through here, so a second worker
started on the same run sees the first one's claim and leaves the run alone,
saying why (EXIT_CLAIMED). Kept apart from consolidator.run so that it can be
loaded without the training stack.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from daemon.contract import EXIT_CLAIMED, EXIT_FAILED
from daemon.memory.lifecycle import CLAIM_LEASE_S, Claim, ClaimHeld, Lifecycle, TransitionRefused
from daemon.memory.records import Consolidation, RunState

log = logging.getLogger("memoryd.consolidator")


async def work(
    store: Lifecycle,
    run_id: int,
    consolidate: Callable[[Consolidation], Awaitable[int]],
    lease_s: float = CLAIM_LEASE_S,
) -> int:
    """Claim run ``run_id`` and ``consolidate`` it; the exit code (daemon.contract)."""
    try:
        async with Claim(store, run_id, lease_s) as claim:
            run = await store.run(run_id)
            if run is None:
                log.warning("consolidation %s does not exist: nothing to do", run_id)
                return EXIT_CLAIMED
            try:
                await store.transition(run, RunState.running, detail={"worker": claim.token})
            except TransitionRefused as exc:  # not queued: run, or settled, before
                log.warning("%s: nothing to do", exc)
                return EXIT_CLAIMED
            try:
                return await consolidate(run)
            except TransitionRefused as exc:
                log.error("consolidation %s was moved on by another process: %s", run_id, exc)
                return EXIT_FAILED
            except Exception as exc:
                log.exception("consolidation %s failed", run_id)
                await store.transition(run, RunState.failed, error=f"{type(exc).__name__}: {exc}")
                return EXIT_FAILED
    except ClaimHeld as exc:
        log.warning("%s; this worker leaves it alone", exc)
        return EXIT_CLAIMED
