"""Adapter directories on disk: immutable, versioned, verified before use.

``state/adapters/vN/`` holds PEFT's files and ``manifest.json`` with a sha256
of each file. A directory whose files do not match its manifest (truncated,
corrupt, half-written) is refused before it ever reaches vLLM.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from daemon.memory.records import AdapterManifest

MANIFEST = "manifest.json"
REQUIRED = ("adapter_config.json", "adapter_model.safetensors")
_VERSION_DIR = re.compile(r"^v(\d+)$")


class AdapterInvalid(Exception):
    """An adapter directory that must not be loaded."""


def adapter_name(version: int, tenant: str | None = None) -> str:
    """``mem-vN`` for the default tenant, ``mem-<tenant>-vN`` for a named one (unique in vLLM)."""
    return f"mem-{tenant}-v{version}" if tenant else f"mem-v{version}"


def adapter_dir(adapters_dir: Path, version: int) -> Path:
    return adapters_dir / f"v{version}"


def staging_dir(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """A directory to write in that appears at ``final`` whole (one rename), or not at all."""
    partial = staging_dir(final)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        yield partial
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(directory: Path) -> dict[str, str]:
    return {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }


def read_manifest(directory: Path) -> AdapterManifest:
    """What an adapter directory says it holds, its files unchecked; AdapterInvalid if unreadable."""
    try:
        return AdapterManifest.model_validate_json((directory / MANIFEST).read_text())
    except FileNotFoundError as exc:
        raise AdapterInvalid(f"{directory}: no {MANIFEST}") from exc
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterInvalid(f"{directory}: unreadable {MANIFEST}: {exc}") from exc


def verify(directory: Path) -> AdapterManifest:
    """The manifest of a complete, untampered adapter directory, or AdapterInvalid."""
    manifest = read_manifest(directory)
    missing = [f for f in REQUIRED if f not in manifest.files]
    if missing:
        raise AdapterInvalid(f"{directory}: manifest lists no {', '.join(missing)}")
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise AdapterInvalid(f"{directory}: {name} is missing")
        if sha256_file(path) != expected:
            raise AdapterInvalid(f"{directory}: {name} does not match its manifest checksum")
    return manifest


def versions_on_disk(adapters_dir: Path) -> list[int]:
    if not adapters_dir.is_dir():
        return []
    found = (_VERSION_DIR.match(p.name) for p in adapters_dir.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)
