"""Commands about the daemon's state: status, consolidation runs, adapters, pause and resume."""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from daemon.cli.common import ConfigOpt, JsonOpt, call, client, console, dump, err, events, when
from daemon.memory.records import RunState


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
    table.add_row("passages", str(data["passages"]))
    table.add_row("facts", str(data["facts"]))
    redis = data["redis"]
    where = f"private, pid {redis['pid']}" if redis["private"] else "external"
    table.add_row(
        "redis", f"{'ok' if redis['ok'] else 'DOWN'} ({where}, restarts {redis['restarts']})"
    )
    table.add_row("observer", ", ".join(f"{k} {v}" for k, v in data["observer"].items()))
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(data["redacted"].items()))
    table.add_row("redacted", kinds or "none")
    console.print(table)


consolidations_app = typer.Typer(help="Consolidation runs and their log.")


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
        value = f"{g['value']:.3f}" if g.get("judged", True) else "not judged"
        gates.add_row(g["name"], value, f"{g['threshold']:.3f}", str(g["passed"]))
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
    """Print a run's log until it is settled; exit 0 if it is promoted, 1 if rejected or failed.

    Reads the daemon's event feed, the one the dashboard shows.
    """
    if run_id is None:
        runs = call(config, "GET", "/admin/consolidations?limit=1")["consolidations"]
        if not runs:
            err.print("[red]memoryd:[/red] no consolidation yet")
            raise typer.Exit(1)
        run_id = int(runs[0]["id"])
    run = call(config, "GET", f"/admin/consolidations/{run_id}")
    if RunState(run["state"]).settled:  # its whole log is there already
        logged = call(config, "GET", f"/admin/events?run={run_id}")["events"]
    else:
        logged = until_settled(events(client(config), after="0"), run_id)
    for event in logged:
        if as_json:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
        else:
            detail = " ".join(f"{k}={v}" for k, v in event["detail"].items())
            console.print(f"{when(event['at'])}  run {run_id}  {event['step']:<10} {detail}")
    run = call(config, "GET", f"/admin/consolidations/{run_id}")
    if not as_json:
        console.print(f"consolidation {run_id}: {run['state']} {verdict(run)}")
    raise typer.Exit(0 if run["state"] == "promoted" else 1)


def until_settled(feed: Iterator[dict[str, Any]], run_id: int) -> Iterator[dict[str, Any]]:
    """Run ``run_id``'s events from the feed, up to the one that settles it."""
    for event in feed:
        if event["run"] != run_id:
            continue
        yield event
        if event["step"] in SETTLED:
            return


SETTLED = {s.value for s in RunState if s.settled}


def consolidate(
    config: str | None = ConfigOpt,
    wait: bool = typer.Option(False, "--wait", help="wait until the run is settled"),
    as_json: bool = JsonOpt,
) -> None:
    """Start a consolidation now; with --wait, show its phases and steps until it is settled."""
    if not wait:
        queued = call(config, "POST", "/admin/consolidate")
        return dump(queued) if as_json else console.print(f"consolidation {queued['run']} started")
    started: list[int] = []

    def start() -> None:  # once the feed is open: none of the run's events is missed
        started.append(call(config, "POST", "/admin/consolidate")["run"])

    with client(config) as http:
        feed = events(http, on_open=start)
        first = next(feed)
        run_id = started[0]
        log = until_settled(itertools.chain([first], feed), run_id)
        if as_json:
            for _ in log:
                pass
        else:
            show_progress(log, run_id)
    run = call(config, "GET", f"/admin/consolidations/{run_id}")
    if as_json:
        dump(run)
    else:
        console.print(f"consolidation {run_id}: {run['state']} {run.get('adapter') or ''}")
        if run["state"] != "promoted":
            console.print(verdict(run), markup=False)
    raise typer.Exit(0 if run["state"] == "promoted" else 1)


def show_progress(log: Iterator[dict[str, Any]], run_id: int) -> None:
    """A rich progress bar of the run's phase and training steps, with the daemon's ETA."""
    columns = (
        TextColumn("run {task.fields[run]}: [bold]{task.description}[/bold]"),
        BarColumn(),
        TextColumn("{task.fields[steps]}"),
        TextColumn("{task.fields[eta]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("queued", total=None, run=run_id, steps="", eta="")
        for event in log:
            step, detail = event["step"], event["detail"]
            if step == "progress":
                bar.update(
                    task,
                    description=detail["phase"],
                    total=detail["total"],
                    completed=detail["completed"],
                    steps=f"step {detail['completed']} of {detail['total']}",
                    eta=eta_text(detail.get("eta_s")),
                )
            elif detail.get("state") == "started" or step in {s.value for s in RunState}:
                bar.update(task, description=step, total=None, completed=0, steps="", eta="")


def eta_text(seconds: float | None) -> str:
    """As the dashboard writes it."""
    if seconds is None:
        return ""
    s = round(seconds)
    return f"ETA {s // 60} min {s % 60} s" if s >= 60 else f"ETA {s} s"


adapters_app = typer.Typer(help="Adapter versions on disk.")


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
    as_json: bool = JsonOpt,
) -> None:
    """Serve an earlier (or any valid) adapter version."""
    number = version.removeprefix("mem-v").removeprefix("v")
    if not number.isdigit():
        err.print(f"[red]memoryd:[/red] not a version: {version}")
        raise typer.Exit(2)
    data = call(config, "POST", f"/admin/adapters/{number}/activate?force={str(force).lower()}")
    if as_json:
        return dump(data)
    console.print(f"now serving {data['active']}")


def pause(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Start no consolidation on idle until `resume`."""
    data = call(config, "POST", "/admin/pause")
    return dump(data) if as_json else console.print("automatic consolidation paused")


def resume(config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    data = call(config, "POST", "/admin/resume")
    return dump(data) if as_json else console.print("automatic consolidation resumed")
