"""systemd notifications: READY once serving, STATUS as the state changes, WATCHDOG pings."""

from __future__ import annotations

import asyncio
import os

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None
        if self._sd and self._sd.socket:
            self._sd.socket.setblocking(False)  # a stalled reader must never block the event loop
        self._last_status = ""

    def send(self, message: str) -> None:
        if self._sd:
            self._sd.notify(message)

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")
        self._last_status = status

    def status(self, status: str) -> None:
        if status != self._last_status:
            self.send(f"STATUS={status}")
            self._last_status = status

    def stopping(self) -> None:
        self.send("STOPPING=1")

    @staticmethod
    def watchdog_interval_s() -> float | None:
        usec = os.environ.get("WATCHDOG_USEC")
        return int(usec) / 2e6 if usec and usec.isdigit() else None

    async def keep_alive(self, describe: object) -> None:
        """Ping the watchdog at half its interval and keep STATUS= current."""
        interval = self.watchdog_interval_s() or 5.0
        while True:
            self.send("WATCHDOG=1")
            self.status(str(describe() if callable(describe) else describe))
            await asyncio.sleep(interval)
