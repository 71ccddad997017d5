"""``memoryd passages`` and ``memoryd facts``: what memory holds, and forgetting it."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from daemon.cli.common import ConfigOpt, JsonOpt, call, console, dump, err, when

passages_app = typer.Typer(help="Recurring context: passages and the statements read in them.")


@passages_app.callback(invoke_without_command=True)
def passages(
    ctx: typer.Context,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
    limit: int = typer.Option(50, help="how many, most recent first"),
) -> None:
    """List passages (default), or show / forget one."""
    if not ctx.invoked_subcommand:
        passage_list(config, as_json, limit)


@passages_app.command("list")
def passage_list(
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
    limit: int = typer.Option(50, help="how many, most recent first"),
) -> None:
    """Passages with their status, conversations, statements and when last seen."""
    data = call(config, "GET", f"/admin/passages?limit={limit}")
    if as_json:
        return dump(data)
    table = Table(title=f"{data['total']} passages")
    for col in ("id", "status", "convs", "facts", "questions", "last seen", "begins"):
        table.add_column(col)
    for p in data["passages"]:
        status_text = p["status"] + (f" v{p['version']}" if p.get("version") else "")
        table.add_row(
            p["id"],
            status_text,
            str(p["conversations"]),
            str(len(p["fact_ids"])),
            str(len(p["questions"])),
            when(p["last_seen"]),
            " ".join(p["text"].split())[:70],
        )
    console.print(table)


@passages_app.command("show")
def passage_show(passage_id: str, config: str | None = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """A passage, its statements (references resolved) and the questions asked with it."""
    data = call(config, "GET", f"/admin/passages/{passage_id}")
    if as_json:
        return dump(data)
    console.print(
        f"[bold]passage {data['id']}[/bold] {data['status']}, {data['conversations']} conversations"
    )
    console.print(data["text"], markup=False)
    table = Table(title="statements")
    for col in ("id", "status", "statement", "as written"):
        table.add_column(col)
    for f in data["facts"]:
        table.add_row(f["id"], f["status"], f["text"], f.get("source") or "")
    console.print(table)
    for q in data["questions"]:
        console.print(f"asked: {q}", markup=False)


NowOpt = typer.Option(
    False,
    "--now",
    help="retire the serving adapter at once if it holds it (the previous clean adapter or "
    "the base model serves); otherwise it serves until the next consolidation replaces it",
)


@passages_app.command("forget")
def passage_forget(
    passage_id: str,
    now: bool = NowOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Forget a passage and its statements: their words leave Redis and every adapter."""
    data = call(config, "DELETE", f"/admin/passages/{passage_id}?now={str(now).lower()}")
    if as_json:
        return dump(data)
    console.print(f"forgot passage {data['id']} and {len(data['facts'])} statements")
    print_retirement(data["retirement"])


def print_retirement(retirement: dict[str, Any]) -> None:
    if retirement["retired"]:
        console.print(f"retired {', '.join(retirement['retired'])}", markup=False)
    if retirement["until_replaced"]:
        console.print(
            f"{retirement['until_replaced']} holds it and serves until the next consolidation "
            "replaces it (--now: retire it at once)",
            markup=False,
        )
    console.print(f"serving {retirement['serving'] or 'the base model'}", markup=False)


facts_app = typer.Typer(help="Facts: the statements read in passages.")


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
    now: bool = NowOpt,
    config: str | None = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Forget a fact (FACT_ID, or every fact matching --match TEXT): its words leave Redis and
    every adapter."""
    if (fact_id is None) == (match is None):
        err.print("give a FACT_ID or --match TEXT (one of them)")
        raise typer.Exit(2)
    if fact_id is not None:
        data = call(config, "DELETE", f"/admin/facts/{fact_id}?now={str(now).lower()}")
        facts, retirement = [data], data["retirement"]
    else:
        data = call(config, "POST", "/admin/facts/forget", {"match": match, "now": now})
        facts, retirement = data["facts"], data["retirement"]
    if as_json:
        return dump({"forgotten": facts, "retirement": retirement})
    console.print(f"forgot {', '.join(f['id'] for f in facts)}", markup=False)
    print_retirement(retirement)
