"""SIGHUP: apply a changed configuration without a restart, where that is safe.

Settings are shared by reference (the services, the consolidator, the auth
checks all hold the one object), so a live change is made in place on it. What
would need new processes, sockets or files (the listener, the engine, Redis,
the state directory) is left as it was and reported as needing a restart.
"""

from __future__ import annotations

from typing import Any

from daemon.config import Settings

RESTART_ONLY = (
    "state_dir",
    "served_model_name",
    "server.host",
    "server.port",
    "redis.",
    "engine.",
    "consolidation.check_interval_s",
    "tenants",  # each tenant has its own parts, built at start
)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two dumps of the settings."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for name in old:
            keys += changed_keys(old[name], new.get(name), f"{prefix}{name}.")
        return keys
    return [prefix.rstrip(".")] if old != new else []


def apply(current: Settings, new: Settings) -> tuple[list[str], list[str]]:
    """Copy live-changeable values from ``new`` onto ``current``: (applied, needs restart)."""
    applied, restart = [], []
    for key in changed_keys(current.model_dump(), new.model_dump()):
        if key.startswith(RESTART_ONLY):
            restart.append(key)
            continue
        *path, name = key.split(".")
        target, source = current, new
        for part in path:
            target, source = getattr(target, part), getattr(source, part)
        setattr(target, name, getattr(source, name))
        applied.append(key)
    return applied, restart
