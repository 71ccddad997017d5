"""``memoryd serve``: the daemon in the foreground, with SIGHUP reloading its config."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from typing import Any

import typer
import uvicorn
import uvloop

from daemon import logs, preflight, reload
from daemon.cli.common import ConfigOpt, err, settings_or_exit
from daemon.config import ConfigError, Settings, load_settings

log = logging.getLogger("memoryd")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(config: str | None = ConfigOpt) -> None:
    """Run the daemon in the foreground."""
    from daemon.app import create_app
    from daemon.notify import Notifier

    settings = settings_or_exit(config)
    found = preflight.problems(settings)
    if problem := open_endpoint(settings):
        found.insert(0, problem)
    for problem in found:
        err.print(f"[red]memoryd:[/red] {problem}", soft_wrap=True)
    if found:
        raise typer.Exit(2)
    logs.configure(settings.log_level, settings.log_format)
    notifier = Notifier()

    def describe(svc: Any) -> str:
        active = svc.swapper.active.name if svc.swapper.active else "base"
        return f"serving {active}; consolidation {svc.consolidator.phase.value}"

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.server.host,
            port=settings.server.port,
            log_level=settings.log_level,
            log_config=None,  # uvicorn's records go through memoryd's handler
            access_log=False,
            timeout_graceful_shutdown=30,
        )
    )

    async def run() -> None:
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.1)
        if server.started:
            svc = server.config.loaded_app.app.state.services
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: reload_config(config, settings, svc)
            )
            notifier.ready(describe(svc))
            keep = asyncio.create_task(notifier.keep_alive(lambda: describe(svc)))
            await serving
            keep.cancel()
            notifier.stopping()
        await serving

    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again against the
    # handler it found: make that a no-op so a clean shutdown exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
    if not server.started:
        raise typer.Exit(1)


def open_endpoint(settings: Settings) -> str | None:
    if settings.server.api_keys or is_loopback(settings.server.host):
        return None
    return (
        f"server.host {settings.server.host} is not loopback and server.api_keys is empty: "
        "refusing to serve an open endpoint"
    )


def reload_config(config: str | None, settings: Settings, svc: Any) -> None:
    """SIGHUP: re-read the file and the environment; apply what can change live."""
    try:
        new = load_settings(config)
        if problem := open_endpoint(new):
            raise ConfigError(problem)
    except ConfigError as exc:
        log.error("config reload refused; the running config stays: %s", exc)
        return
    applied, restart = reload.apply(settings, new)
    logs.configure(settings.log_level, settings.log_format)
    svc.swapper.routing = settings.routing
    log.info(
        "config reloaded: applied %s; needs a restart, left as it was: %s",
        ", ".join(applied) or "nothing",
        ", ".join(restart) or "nothing",
        extra={"reload": {"applied": applied, "needs_restart": restart}},
    )
