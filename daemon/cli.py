"""The ``memoryd`` command: run the daemon, or talk to a running one's admin API.

Exit codes: 0 done, 1 the daemon refused or failed, 2 bad usage or configuration,
3 the daemon could not be reached.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import signal
import sys
import time
from typing import Any

import httpx
import typer
import uvicorn
import uvloop
from rich.console import Console
from rich.table import Table

from daemon import logs, reload
from daemon.config import ConfigError, Settings, load_settings

log = logging.getLogger("memoryd")
app = typer.Typer(
    help="memoryd: a chat daemon that consolidates recurring context into LoRA memory."
)
console = Console()
err = Console(stderr=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file (or MEMORYD_CONFIG)")
JsonOpt = typer.Option(False, "--json", help="print JSON for scripts")


def settings_or_exit(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]memoryd:[/red] {exc}")
        raise typer.Exit(2) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- serve ---------------------------------------------------------------------
@app.command()
def serve(config: str | None = ConfigOpt) -> None:
    """Run the daemon in the foreground."""
    from daemon.app import create_app
    from daemon.notify import Notifier

    settings = settings_or_exit(config)
    if problem := open_endpoint(settings):
        err.print(f"[red]memoryd:[/red] {problem}")
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


# --- admin client ----------------------------------------------------------------
def client(config: str | None) -> httpx.Client:
    settings = settings_or_exit(config)
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::") else settings.server.host
    headers = (
        {"Authorization": f"Bearer {settings.server.admin_token}"}
        if settings.server.admin_token
        else {}
    )
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


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def dump(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


@app.command()
def status(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """What is served, the engine, and the consolidation state."""
    data = call(config, "GET", "/admin/status")
    if as_json:
        return dump(data)
    c = data["consolidation"]
    table = Table(show_header=False, box=None)
    table.add_row("active adapter", data["active_adapter"] or "none (base model)")
    table.add_row("loaded", ", ".join(data["loaded_adapters"]) or "-")
    table.add_row(
        "engine", f"{', '.join(data['engine']['upstream'])} ready={data['engine']['ready']}"
    )
    table.add_row(
        "consolidation",
        f"{c['state']} (run {c['run'] or '-'}), idle {c['idle_for_s']}s of {c['idle_after_s']}s",
    )
    table.add_row("facts", str(data["facts"]))
    redis = data["redis"]
    where = f"private, pid {redis['pid']}" if redis["private"] else "external"
    table.add_row(
        "redis", f"{'ok' if redis['ok'] else 'DOWN'} ({where}, restarts {redis['restarts']})"
    )
    table.add_row("observer", ", ".join(f"{k} {v}" for k, v in data["observer"].items()))
    console.print(table)


facts_app = typer.Typer(help="Facts noticed in served contexts.")
app.add_typer(facts_app, name="facts")


@facts_app.callback(invoke_without_command=True)
def facts(
    ctx: typer.Context,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
    limit: int = typer.Option(50, help="how many, most recent first"),
) -> None:
    """List facts (default), or show / forget one."""
    if not ctx.invoked_subcommand:
        fact_list(config, as_json, limit)


@facts_app.command("list")
def fact_list(
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
    limit: int = typer.Option(50, help="how many, most recent first"),
) -> None:
    """Facts with their status, conversations and when last seen."""
    data = call(config, "GET", f"/admin/facts?limit={limit}")
    if as_json:
        return dump(data)
    table = Table(title=f"{data['total']} facts")
    for col in ("id", "status", "convs", "hits", "last seen", "text"):
        table.add_column(col)
    for f in data["facts"]:
        status_text = f["status"] + (f" v{f['version']}" if f.get("version") else "")
        if f.get("replaced_by"):
            status_text += f" by {f['replaced_by']}"
        table.add_row(
            f["id"],
            status_text,
            str(f["conversations"]),
            str(f["hits"]),
            when(f["last_seen"]),
            f["text"],
        )
    console.print(table)


@facts_app.command("show")
def fact_show(fact_id: str, config: str | None = ConfigOpt) -> None:
    dump(call(config, "GET", f"/admin/facts/{fact_id}"))


MatchOpt = typer.Option(None, "--match", help="forget every fact containing this text")


@facts_app.command("forget")
def fact_forget(
    fact_id: str | None = typer.Argument(None),
    match: str | None = MatchOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Leave a fact (FACT_ID, or every fact matching --match TEXT) out of every future adapter."""
    if (fact_id is None) == (match is None):
        err.print("give a FACT_ID or --match TEXT (one of them)")
        raise typer.Exit(2)
    if fact_id is not None:
        facts = [call(config, "DELETE", f"/admin/facts/{fact_id}")]
    else:
        facts = call(config, "POST", "/admin/facts/forget", {"match": match})["facts"]
    if as_json:
        return dump({"forgotten": facts})
    for f in facts:
        console.print(f"forgot {f['id']}: {f['text']}")


app.command("forget", help="Same as `facts forget`.")(fact_forget)


consolidations_app = typer.Typer(help="Consolidation runs and their log.")
app.add_typer(consolidations_app, name="consolidations")


@consolidations_app.callback(invoke_without_command=True)
def consolidations(
    ctx: typer.Context, config: str | None = ConfigOpt, as_json: bool = JsonOpt
) -> None:
    """List runs (default), or show / follow one."""
    if not ctx.invoked_subcommand:
        consolidation_list(config, as_json)


@consolidations_app.command("list")
def consolidation_list(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Runs: state, adapter, metrics, timings, reasons."""
    data = call(config, "GET", "/admin/consolidations")
    if as_json:
        return dump(data)
    table = Table(title="consolidations")
    for col in ("run", "state", "trigger", "started", "seconds", "facts", "adapter"):
        table.add_column(col)
    table.add_column("metrics / reasons")
    for r in data["consolidations"]:
        took = f"{r['finished_at'] - r['started_at']:.0f}" if r.get("finished_at") else "-"
        table.add_row(
            str(r["id"]),
            r["state"],
            r["trigger"],
            when(r["started_at"]),
            took,
            str(len(r["fact_ids"])),
            r["adapter"] or "-",
            verdict(r),
        )
    console.print(table)


def verdict(run: dict[str, Any]) -> str:
    m = run["metrics"]
    shown = " ".join(
        f"{k}={m[k]:.2f}" for k in ("efficacy", "generalization", "retention") if k in m
    )
    problems = run["reasons"][:2] + ([run["error"]] if run.get("error") else [])
    return " ".join([shown, "; ".join(problems)]).strip()


@consolidations_app.command("show")
def consolidation_show(
    run_id: int, config: str | None = ConfigOpt, as_json: bool = JsonOpt
) -> None:
    """One run in full: facts, steps with timings, gates, decision."""
    run = call(config, "GET", f"/admin/consolidations/{run_id}")
    if as_json:
        return dump(run)
    console.print(f"[bold]consolidation {run['id']}[/bold] ({run['trigger']}): {run['state']}")
    steps = Table(title="steps")
    for col in ("step", "started", "seconds", "detail"):
        steps.add_column(col)
    for step in run["steps"]:
        seconds = "-" if step["seconds"] is None else f"{step['seconds']:.1f}"
        detail = " ".join(f"{k}={v}" for k, v in step["detail"].items())
        steps.add_row(step["name"], when(step["started_at"]), seconds, detail)
    console.print(steps)
    gates = Table(title="gates")
    for col in ("gate", "value", "threshold", "passed"):
        gates.add_column(col)
    for g in run["gates"]:
        gates.add_row(g["name"], f"{g['value']:.3f}", f"{g['threshold']:.3f}", str(g["passed"]))
    console.print(gates)
    console.print(f"facts: {', '.join(run['fact_ids']) or '-'}")
    console.print(f"metrics: {json.dumps(run['metrics'])}")
    console.print(f"decision: {run['state']} {verdict(run)}")


@consolidations_app.command("follow")
def consolidation_follow(
    run_id: int | None = typer.Argument(None, help="default: the newest run"),
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print a run's log as it happens; exit 0 if it is promoted, 1 if rejected or failed."""
    if run_id is None:
        runs = call(config, "GET", "/admin/consolidations?limit=1")["consolidations"]
        if not runs:
            err.print("[red]memoryd:[/red] no consolidation yet")
            raise typer.Exit(1)
        run_id = int(runs[0]["id"])
    after = "0"
    while True:
        run = call(config, "GET", f"/admin/consolidations/{run_id}")
        page = call(config, "GET", f"/admin/events?after={after}&run={run_id}")
        after = page["last_id"]
        for event in page["events"]:
            if as_json:
                sys.stdout.write(json.dumps(event) + "\n")
            else:
                detail = " ".join(f"{k}={v}" for k, v in event["detail"].items())
                console.print(f"{when(event['at'])}  run {run_id}  {event['step']:<10} {detail}")
        sys.stdout.flush()
        if run["state"] != "running":
            break
        time.sleep(1)
    if not as_json:
        console.print(f"consolidation {run_id}: {run['state']} {verdict(run)}")
    raise typer.Exit(0 if run["state"] == "promoted" else 1)


@app.command()
def consolidate(
    config: str | None = ConfigOpt,
    wait: bool = typer.Option(False, "--wait", help="wait until the run ends"),
    as_json: bool = JsonOpt,
) -> None:
    """Start a consolidation now."""
    started = call(config, "POST", "/admin/consolidate")
    run_id = started["run"]
    if not wait:
        return dump(started) if as_json else console.print(f"consolidation {run_id} started")
    while True:
        run = call(config, "GET", f"/admin/consolidations/{run_id}")
        if run["state"] != "running":
            break
        time.sleep(2)
    if as_json:
        dump(run)
    else:
        console.print(f"consolidation {run_id}: {run['state']} {run.get('adapter') or ''}")
    raise typer.Exit(0 if run["state"] == "promoted" else 1)


adapters_app = typer.Typer(help="Adapter versions on disk.")
app.add_typer(adapters_app, name="adapters")


@adapters_app.callback(invoke_without_command=True)
def adapters(ctx: typer.Context, config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """List adapter versions (default), or roll back to one."""
    if not ctx.invoked_subcommand:
        adapter_list(config, as_json)


@adapters_app.command("list")
def adapter_list(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Versions on disk: state, active, loaded, checksum problems."""
    data = call(config, "GET", "/admin/adapters")
    if as_json:
        return dump(data)
    table = Table(title=f"adapters (active: {data['active'] or 'none'})")
    for col in ("version", "state", "active", "loaded", "created", "facts", "metrics / problem"):
        table.add_column(col)
    for a in data["adapters"]:
        m = a["metrics"]
        detail = a["problem"] or " ".join(
            f"{k}={m[k]:.2f}" for k in ("efficacy", "generalization", "retention") if k in m
        )
        table.add_row(
            a["name"], a["state"] or "-", "*" if a["active"] else "", "yes" if a["loaded"] else "",
            when(a["created_at"]), str(a["facts"] or "-"), detail,
        )  # fmt: skip
    console.print(table)


@adapters_app.command("rollback")
def rollback(
    version: str = typer.Argument(..., help="N or mem-vN"),
    config: str | None = ConfigOpt,
    force: bool = typer.Option(False, help="activate even a rejected adapter"),
) -> None:
    """Serve an earlier (or any valid) adapter version."""
    number = version.removeprefix("mem-v").removeprefix("v")
    if not number.isdigit():
        err.print(f"[red]memoryd:[/red] not a version: {version}")
        raise typer.Exit(2)
    data = call(config, "POST", f"/admin/adapters/{number}/activate?force={str(force).lower()}")
    console.print(f"now serving {data['active']}")


@app.command()
def pause(config: str | None = ConfigOpt) -> None:
    """Start no consolidation on idle until `resume`."""
    call(config, "POST", "/admin/pause")
    console.print("automatic consolidation paused")


@app.command()
def resume(config: str | None = ConfigOpt) -> None:
    call(config, "POST", "/admin/resume")
    console.print("automatic consolidation resumed")


def main() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    app()
