"""What every ``memoryd`` command shares: options, the admin client, output."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import typer
from rich.console import Console

from daemon.config import ConfigError, Settings, load_settings

console = Console()
err = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (or MEMORYD_CONFIG)")
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")
TENANT_ENV = "MEMORYD_TENANT"
TenantOpt = typer.Option(
    None,
    "--tenant",
    "-t",
    envvar=TENANT_ENV,
    help="whose memory (default: the default tenant, or the admin token's own)",
)


def choose_tenant(tenant: str | None) -> None:
    """``memoryd --tenant NAME ...``: the root option, handed to every command's admin client.

    Kept in the process environment (the option's own variable), the one place
    every command's client reads without each command taking the option.
    """
    if tenant:
        os.environ[TENANT_ENV] = tenant


def settings_or_exit(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(f"[red]memoryd:[/red] {line}", soft_wrap=True)
        raise typer.Exit(2) from None


def client(config: str | None) -> httpx.Client:
    settings = settings_or_exit(config)
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::") else settings.server.host
    headers = (
        {"Authorization": f"Bearer {settings.server.admin_token}"}
        if settings.server.admin_token
        else {}
    )
    if tenant := os.environ.get(TENANT_ENV):
        headers["X-Memoryd-Tenant"] = tenant
    return httpx.Client(
        base_url=f"http://{host}:{settings.server.port}", headers=headers, timeout=30
    )


def call(config: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    with client(config) as http:
        try:
            response = http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            err.print(f"[red]memoryd:[/red] cannot reach the daemon at {http.base_url}: {exc}")
            raise typer.Exit(3) from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        err.print(f"[red]memoryd:[/red] {response.status_code}: {message}")
        raise typer.Exit(1)
    return response.json()


def events(
    http: httpx.Client, after: str | None = None, on_open: Callable[[], None] = lambda: None
) -> Iterator[dict[str, Any]]:
    """The daemon's consolidation feed (server-sent events), one event at a time, until closed.

    ``after``: the id of the last event already seen ("0" = all); default: from now on.
    ``on_open``: called once the feed's start is fixed, before its first event.
    """
    params = {"after": after} if after else {}
    try:
        with http.stream("GET", "/admin/events/stream", params=params, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                err.print(f"[red]memoryd:[/red] {response.status_code}: {response.text}")
                raise typer.Exit(1)
            on_open()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line.removeprefix("data: "))
    except httpx.HTTPError as exc:
        err.print(f"[red]memoryd:[/red] the event feed at {http.base_url} ended: {exc}")
        raise typer.Exit(3) from None


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def dump(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
