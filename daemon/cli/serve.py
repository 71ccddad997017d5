"""``memoryd serve``: reads the config and hands it to daemon.server.run."""

from __future__ import annotations

import typer

from daemon import preflight
from daemon.cli.common import ConfigOpt, err, settings_or_exit
from daemon.config import ConfigError


def serve(config: str | None = ConfigOpt) -> None:
    """Run the daemon in the foreground (SIGHUP reloads the config)."""
    from daemon import server  # the serving stack loads only for this command

    settings = settings_or_exit(config)
    found = preflight.problems(settings)
    for problem in found:
        err.print(f"[red]memoryd:[/red] {problem}", soft_wrap=True)
    if found:
        raise typer.Exit(2)
    try:
        code = server.run(settings, config)
    except ConfigError as exc:
        err.print(f"[red]memoryd:[/red] {exc}")
        raise typer.Exit(2) from None
    if code:
        raise typer.Exit(code)
