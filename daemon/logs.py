"""Logging for the daemon and the consolidator child: text for a terminal, JSON for journald.

In JSON every record is one object per line; records about a consolidation
carry an ``event`` object (run, step, and the step's numbers) so that a log
pipeline can query them without parsing messages.
"""

from __future__ import annotations

import logging
import sys
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
