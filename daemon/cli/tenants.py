"""``memoryd tenant``: the tenants the daemon serves, and wiping everything one left."""

from __future__ import annotations

import typer
from rich.table import Table

from daemon.cli.common import ConfigOpt, JsonOpt, call, console, dump, err

tenant_app = typer.Typer(help="Tenants: each has its own memory and adapters.")


@tenant_app.command("list")
def tenant_list(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Tenants the admin token may see, with what each holds."""
    data = call(config, "GET", "/admin/tenants")
    if as_json:
        return dump(data)
    table = Table(title="tenants")
    for col in ("tenant", "learn", "keys", "active adapter", "consolidation", "passages", "facts"):
        table.add_column(col)
    for t in data["tenants"]:
        table.add_row(
            t["name"],
            "yes" if t["learn"] else "no",
            str(t["api_keys"]),
            t["active_adapter"] or "-",
            t["consolidation"],
            str(t["passages"]),
            str(t["facts"]),
        )
    console.print(table)


@tenant_app.command("wipe")
def tenant_wipe(
    name: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask"),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Remove everything tenant NAME left: Redis keys, runs, logs, adapters (unloaded)."""
    if not yes and not typer.confirm(f"wipe every trace of tenant {name}?"):
        err.print("[red]memoryd:[/red] not wiped")
        raise typer.Exit(1)
    data = call(config, "POST", f"/admin/tenants/{name}/wipe")
    if as_json:
        return dump(data)
    unloaded = ", ".join(data["adapters_unloaded"]) or "none"
    console.print(
        f"tenant {name} wiped: {data['keys']} Redis keys, {data['directory']} removed, "
        f"adapters unloaded: {unloaded}"
    )
