"""Engine choice: least outstanding requests among healthy engines; health checks take a failing
engine out and bring it back only once it has what memoryd serves."""

from __future__ import annotations

from typing import cast

import pytest

from daemon.engine.client import EngineClient
from daemon.engine.pool import NoEngine, Pool


class Probed:
    """An engine whose health the test sets."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.up = True

    async def healthy(self) -> bool:
        return self.up

    async def aclose(self) -> None:
        pass


def pool_of(*engines: Probed) -> Pool:
    return Pool([cast(EngineClient, e) for e in engines])


def test_least_outstanding_healthy_engine_takes_the_request() -> None:
    pool = pool_of(Probed("a"), Probed("b"), Probed("c"))
    a, b, c = pool.replicas
    a.outstanding, b.outstanding, c.outstanding = 3, 1, 2
    assert pool.pick() is b
    b.healthy = False
    assert pool.pick() is c
    b.healthy = True
    b.outstanding = c.outstanding = 0
    assert [pool.pick() for _ in range(4)] == [b, c, b, c]  # equals take turns
    assert pool.pick(exclude=[b, c]) is a  # b and c just failed this request
    a.healthy = b.healthy = c.healthy = False
    assert not pool.any_healthy()
    with pytest.raises(NoEngine):
        pool.pick()


async def test_failing_engine_goes_out_and_comes_back_reconciled() -> None:
    engine = Probed("a")
    pool = pool_of(engine)
    replica = pool.replicas[0]
    reconciled: list[str] = []

    async def reconcile(client: EngineClient) -> None:
        reconciled.append(client.url)

    engine.up = False
    await pool.check(replica, reconcile)
    assert not replica.healthy and reconciled == []
    engine.up = True
    await pool.check(replica, reconcile)
    assert replica.healthy and reconciled == ["a"]

    async def cannot_load(client: EngineClient) -> None:
        raise RuntimeError("loading mem-v3 failed")

    await pool.check(replica, cannot_load)  # up, but cannot serve the adapter: kept out
    assert not replica.healthy
