"""The ``memoryd`` command: run the daemon, or talk to a running one's admin API.

Exit codes: 0 done, 1 the daemon refused or failed, 2 bad usage or configuration,
3 the daemon could not be reached.
"""

from __future__ import annotations

import signal

import typer

from daemon.cli import memory, runs, serve, tenants
from daemon.cli.common import TenantOpt, choose_tenant

app = typer.Typer(
    help="memoryd: a chat daemon that consolidates recurring context into LoRA memory."
)


@app.callback()
def options(tenant: str | None = TenantOpt) -> None:
    """memoryd: a chat daemon that consolidates recurring context into LoRA memory."""
    choose_tenant(tenant)


app.command()(serve.serve)
app.command()(runs.status)
app.add_typer(memory.passages_app, name="passages")
app.add_typer(memory.facts_app, name="facts")
app.command("forget", help="Same as `facts forget`.")(memory.fact_forget)
app.add_typer(runs.consolidations_app, name="consolidations")
app.command()(runs.consolidate)
app.add_typer(runs.adapters_app, name="adapters")
app.command()(runs.pause)
app.command()(runs.resume)
app.add_typer(tenants.tenant_app, name="tenant")


def main() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()
