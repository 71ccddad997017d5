"""Where one tenant's memory lives: its Redis keys, its directories, its adapters' names.

The default tenant keeps the layout memoryd always had (``redis.key_prefix``,
``state_dir/adapters/vN``, ``mem-vN``), so a single-tenant deployment reads
its state unchanged. A named tenant T has everything under ``P:t:T`` in Redis
and ``state_dir/tenants/T/`` on disk, with adapters named ``mem-T-vN``: one
prefix and one directory hold all it left, which is what a wipe removes.
Both the daemon and the consolidator child build a tenant's paths here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from daemon.config import DEFAULT_TENANT, Settings
from daemon.contract import Keys
from daemon.engine.adapters import adapter_name


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
