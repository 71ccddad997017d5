"""Where one tenant's memory lives: its Redis keys, its directories, its adapters' names.

The default tenant keeps the layout memoryd always had (``redis.key_prefix``,
``state_dir/adapters/vN``, ``mem-vN``), so a single-tenant deployment reads
its state unchanged. A named tenant T has everything under ``P:t:T`` in Redis
and ``state_dir/tenants/T/`` on disk, with adapters named ``mem-T-vN``: one
prefix and one directory hold all it left, which is what a wipe removes.
Both the daemon and the consolidator child build a tenant's paths here.

A tenant configured ``per_user`` gives each end user (the request's ``user``)
a scope of its own, ``T.<hash>``: the user's name is hashed, never stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from daemon.config import DEFAULT_TENANT, USER_SCOPE, Settings
from daemon.contract import Keys
from daemon.engine.adapters import adapter_name

GLOB_SPECIAL = "\\*?[]"


@dataclass(frozen=True)
class Scope:
    tenant: str
    keys: Keys
    root: Path  # state_dir for the default tenant, state_dir/tenants/<name> otherwise

    @classmethod
    def of(cls, settings: Settings, tenant: str = DEFAULT_TENANT) -> Scope:
        keys = Keys(settings.redis.key_prefix)
        if tenant == DEFAULT_TENANT:
            return cls(tenant, keys, settings.state_dir)
        return cls(tenant, keys.tenant(tenant), settings.state_dir / "tenants" / tenant)

    @property
    def named(self) -> bool:
        return self.tenant != DEFAULT_TENANT

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    @property
    def adapters_dir(self) -> Path:
        return self.root / "adapters"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        """Settings handed to a consolidator child, one file per run."""
        return self.root / "run"

    def adapter_name(self, version: int) -> str:
        return adapter_name(version, self.tenant if self.named else None)


def user_scope(tenant: str, user: str) -> str:
    """The scope name of end user ``user`` within ``tenant``."""
    return f"{tenant}{USER_SCOPE}{hashlib.sha256(user.encode()).hexdigest()[:12]}"


def glob_escape(text: str) -> str:
    return "".join("\\" + c if c in GLOB_SPECIAL else c for c in text)


async def user_scopes(redis: Redis, settings: Settings, name: str) -> list[str]:
    """The end users' scopes of ``per_user`` tenant ``name`` that left memory (Redis or disk)."""
    prefix = Keys(settings.redis.key_prefix).tenant(name).prefix + USER_SCOPE
    found = set()
    async for key in redis.scan_iter(match=glob_escape(prefix) + "*", count=1000):
        found.add(str(key)[len(prefix) :].split(":", 1)[0])
    root = settings.state_dir / "tenants"
    if root.is_dir():  # tenant names hold no glob character
        found |= {p.name.split(USER_SCOPE, 1)[1] for p in root.glob(f"{name}{USER_SCOPE}*")}
    return sorted(f"{name}{USER_SCOPE}{h}" for h in found)


async def all_scopes(redis: Redis, settings: Settings) -> list[Scope]:
    """Every configured tenant's scope, and every end user's of the ``per_user`` ones."""
    names = settings.tenant_names()
    for name in [n for n in names if settings.per_user(n)]:
        names = [*names, *await user_scopes(redis, settings, name)]
    return [Scope.of(settings, n) for n in names]
