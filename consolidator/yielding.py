"""The consolidator's engine client: a bounded number of requests, and chat wins over them.

Data generation and evaluation send many requests at once; at most
``max_in_flight`` reach vLLM at a time (on the 2-core CPU engine, 160 answers of
48 tokens took 29 s at 8 in flight, 22 s at 16 and 21 s at 32).

When a chat request arrives the daemon sends SIGURG and stops this process
(SIGSTOP) a moment later. Stopping alone would leave this process's requests
generating in vLLM, batched with the chat. So on SIGURG the requests in flight
are cancelled at once, which closes their connections and aborts their
generation in vLLM, and nothing is sent until SIGCONT, when they are sent again.
A request already cancelled ``MAX_ABORTS`` times is left to finish, so that a
steady trickle of chat cannot starve a consolidation for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from daemon.contract import PAUSE, RESUME
from daemon.engine.client import Completion, EngineClient

MAX_ABORTS = 2


class YieldingEngine(EngineClient):
    def __init__(self, url: str, max_in_flight: int = 16) -> None:
        super().__init__(url)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._running = asyncio.Event()
        self._running.set()
        self._paused = asyncio.Event()

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(PAUSE, self.pause)
        loop.add_signal_handler(RESUME, self.resume)

    def pause(self) -> None:
        self._running.clear()
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()
        self._running.set()

    async def chat(self, *args: Any, **kwargs: Any) -> list[Completion]:
        async with self._slots:
            for _ in range(MAX_ABORTS):
                await self._running.wait()
                request = asyncio.ensure_future(super().chat(*args, **kwargs))
                paused = asyncio.ensure_future(self._paused.wait())
                await asyncio.wait({request, paused}, return_when=asyncio.FIRST_COMPLETED)
                paused.cancel()
                if request.done():
                    return request.result()
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await request
            await self._running.wait()
            return await super().chat(*args, **kwargs)
