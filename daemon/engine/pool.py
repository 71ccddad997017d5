"""The engines behind memoryd: which one takes a request, and which are fit to.

A request goes to the healthy engine with the fewest requests outstanding
(vLLM's latency grows with its batch, so the least loaded answers soonest).
External upstreams have no supervisor: the pool probes each every
``health_interval_s``. One that fails its probe takes no requests until it
passes again; one that passes has what memoryd serves reconciled with what it
reports loading (GET /v1/models), so an upstream that restarted gets the served
adapter back within one interval instead of answering 404 for it. Managed
replicas are followed through their supervisor instead (``follow``): out the
moment it finds one dead or hung, back once restarted and reconciled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from daemon.engine.client import EngineClient
from daemon.supervisor import Supervisor

log = logging.getLogger("memoryd.pool")
Reconcile = Callable[[EngineClient], Awaitable[None]]


@dataclass(eq=False)
class Replica:
    client: EngineClient
    healthy: bool = True
    outstanding: int = 0


class NoEngine(Exception):
    """No engine is healthy."""


class Pool:
    def __init__(self, clients: list[EngineClient], health_interval_s: float = 5.0) -> None:
        self.replicas = [Replica(c) for c in clients]
        self.health_interval_s = health_interval_s
        self._turn = 0  # where the next search for the least loaded starts
        self._watch: asyncio.Task[None] | None = None

    @property
    def clients(self) -> list[EngineClient]:
        return [r.client for r in self.replicas]

    def any_healthy(self) -> bool:
        return any(r.healthy for r in self.replicas)

    def pick(self, exclude: Collection[Replica] = ()) -> Replica:
        """The healthy replica with the fewest requests outstanding; equals take turns, so
        requests one at a time are spread too. ``exclude``: ones that just failed this request."""
        n = len(self.replicas)
        order = [self.replicas[(self._turn + i) % n] for i in range(n)]
        healthy = [r for r in order if r.healthy and r not in exclude]
        if not healthy:
            raise NoEngine("no engine is healthy")
        chosen = min(healthy, key=lambda r: r.outstanding)  # the first of the least loaded
        self._turn = (self.replicas.index(chosen) + 1) % n
        return chosen

    async def check(self, replica: Replica, reconcile: Reconcile) -> None:
        """Probe one replica; a healthy one is reconciled before it takes requests again."""
        if not await replica.client.healthy():
            if replica.healthy:
                log.error("engine %s failed its health check: taking it out", replica.client.url)
            replica.healthy = False
            return
        try:
            await reconcile(replica.client)
        except Exception as exc:
            log.error("engine %s is up but cannot serve what memoryd serves: %s",
                      replica.client.url, exc)  # fmt: skip
            replica.healthy = False
            return
        if not replica.healthy:
            log.info("engine %s is healthy again: back in", replica.client.url)
        replica.healthy = True

    def follow(self, replica: Replica, supervisor: Supervisor, reconcile: Reconcile) -> None:
        """Keep a managed replica's health in step with its supervisor."""

        def down() -> None:
            log.error("engine %s is down: taking it out", replica.client.url)
            replica.healthy = False

        async def back() -> None:
            await reconcile(replica.client)  # raises: it stays out, and the log says why
            log.info("engine %s is back with what memoryd serves", replica.client.url)
            replica.healthy = True

        supervisor.supervise(on_ready=back, on_down=down)

    def watch(self, reconcile: Reconcile) -> None:
        """Probe every replica every ``health_interval_s`` until ``stop``."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.health_interval_s)
                await asyncio.gather(*(self.check(r, reconcile) for r in self.replicas))

        self._watch = asyncio.create_task(loop(), name="engine-health")

    async def stop(self) -> None:
        if self._watch:
            self._watch.cancel()
            await asyncio.wait({self._watch})
        for client in self.clients:
            await client.aclose()
