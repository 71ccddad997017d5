"""Serving memoryd: ``run(settings)`` is the entry point; the ``serve`` command only calls it.

Signals are handled here: SIGTERM and SIGINT drain through uvicorn, SIGHUP
re-reads the config and applies what can change live, SIGPIPE is ignored. The
services reach this module through ``create_app(on_ready=...)``, once they are
started.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal

import uvicorn
import uvloop

from daemon import logs, reload
from daemon.app import create_app
from daemon.config import ConfigError, Settings, load_settings
from daemon.notify import Notifier
from daemon.services import Services

log = logging.getLogger("memoryd")


def run(settings: Settings, config_file: str | None = None) -> int:
    """Serve until SIGTERM or SIGINT: 0 after a clean shutdown, 1 if it never started.

    ``config_file`` is what SIGHUP reads again. An open endpoint (not loopback,
    no API keys) is refused with ConfigError before anything starts.
    """
    if problem := open_endpoint(settings):
        raise ConfigError(problem)
    logs.configure(settings.log_level, settings.log_format)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again against the
    # handler it found: make that a no-op so a clean shutdown exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    # The CLI dies quietly on a closed pipe (`memoryd facts list | head`); a server
    # must not: a client that resets its connection mid-stream would kill it.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(settings, config_file))


async def _serve(settings: Settings, config_file: str | None) -> int:
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Services] = loop.create_future()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, on_ready=started.set_result),
            host=settings.server.host,
            port=settings.server.port,
            log_level=settings.log_level,
            log_config=None,  # uvicorn's records go through memoryd's handler
            access_log=False,
            timeout_graceful_shutdown=30,
        )
    )
    serving = asyncio.create_task(server.serve())
    # The services start in the lifespan, before uvicorn listens: ready once it does.
    while not server.started and not serving.done():
        await asyncio.sleep(0.1)
    if not server.started:
        await serving
        return 1
    svc = started.result()
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_config(config_file, settings, svc))
    notifier = Notifier()
    notifier.ready(describe(svc))
    keep = asyncio.create_task(notifier.keep_alive(lambda: describe(svc)))
    await serving
    keep.cancel()
    notifier.stopping()
    return 0


def describe(svc: Services) -> str:
    """The one-line status systemd shows."""
    active = svc.swapper.active.name if svc.swapper.active else "base"
    return f"serving {active}; consolidation {svc.consolidator.phase.value}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_endpoint(settings: Settings) -> str | None:
    if settings.api_key_tenants() or is_loopback(settings.server.host):
        return None
    return (
        f"server.host {settings.server.host} is not loopback and server.api_keys is empty: "
        "refusing to serve an open endpoint"
    )


def reload_config(config_file: str | None, settings: Settings, svc: Services) -> None:
    """SIGHUP: re-read the file and the environment; apply what can change live."""
    try:
        new = load_settings(config_file)
        if problem := open_endpoint(new):
            raise ConfigError(problem)
    except ConfigError as exc:
        log.error("config reload refused; the running config stays: %s", exc)
        return
    applied, restart = reload.apply(settings, new)
    logs.configure(settings.log_level, settings.log_format)
    for tenant in svc.tenants.values():
        tenant.swapper.routing = settings.routing
    log.info(
        "config reloaded: applied %s; needs a restart, left as it was: %s",
        ", ".join(applied) or "nothing",
        ", ".join(restart) or "nothing",
        extra={"reload": {"applied": applied, "needs_restart": restart}},
    )
