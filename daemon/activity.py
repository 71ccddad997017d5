"""Chat activity: requests in flight and when the last one ended, to know when it is idle."""

from __future__ import annotations

import time
from collections.abc import Callable


class Activity:
    def __init__(self, on_busy: Callable[[], None] = lambda: None) -> None:
        self.in_flight = 0
        self.last_change = time.monotonic()
        self.on_busy = on_busy

    def begin(self) -> None:
        self.in_flight += 1
        self.last_change = time.monotonic()
        self.on_busy()

    def end(self) -> None:
        self.in_flight -= 1
        self.last_change = time.monotonic()

    def idle_for(self) -> float:
        """Seconds with no request in flight (0 while one is)."""
        return 0.0 if self.in_flight else time.monotonic() - self.last_change
