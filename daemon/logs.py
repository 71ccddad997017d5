"""Logging for the daemon and the consolidator child: text for a terminal, JSON for journald.

In JSON every record is one object per line; records about a consolidation
carry an ``event`` object (run, step, and the step's numbers) so that a log
pipeline can query them without parsing messages.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
QUIET = ("apscheduler", "httpx")  # a line per scheduler tick / per proxied request


def configure(level: str, fmt: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(name)s %(levelname)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class Rotation:
    """A child's log file kept under ``max_bytes``: copied to ``.1`` (older ones shift), then
    truncated in place. The child appends (O_APPEND), so its next line lands at the new end;
    lines written between the copy and the truncation are lost (logrotate's copytruncate)."""

    max_bytes: int
    keep: int

    def apply(self, path: Path) -> bool:
        """Rotate ``path`` if it has grown past ``max_bytes``; whether it did."""
        try:
            if path.stat().st_size <= self.max_bytes:
                return False
        except FileNotFoundError:
            return False
        for n in range(self.keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{n + 1}"))
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
        os.truncate(path, 0)
        return True
