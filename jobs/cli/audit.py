"""``facewatch audit``: read and verify the tamper-evident audit log."""

from __future__ import annotations

import json
import sys

import typer
from rich.table import Table

from jobs.cli.common import console, get_context
from pipelines.audit import AuditLog

app = typer.Typer(help="The audit log: who did what to biometric data, and when.")


def _log(ctx: typer.Context) -> AuditLog:
    return AuditLog(get_context(ctx).settings().resolved_home() / "audit.log")


@app.command("ls")
def ls(
    ctx: typer.Context,
    since: str | None = typer.Option(None, help="ISO date/time, e.g. 2026-11-01"),
    actor: str | None = typer.Option(None, help="only this actor"),
    action: str | None = typer.Option(None, help="only this action (or its sub-actions)"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines on stdout"),
) -> None:
    """List audit records."""
    records = list(_log(ctx).records(since, actor, action))
    if as_json:
        for r in records:
            sys.stdout.write(json.dumps(r) + "\n")
        return
    table = Table("seq", "when (UTC)", "actor", "action", "details")
    for r in records:
        details = json.dumps(r["details"], default=str)
        table.add_row(
            str(r["seq"]),
            r["ts"][:19],
            r["actor"],
            r["action"],
            details if len(details) < 120 else details[:117] + "...",
        )
    console.print(table)


@app.command("verify")
def verify(
    ctx: typer.Context,
    head: str | None = typer.Option(
        None, help="a head hash noted earlier: also check no records were cut off the end"
    ),
) -> None:
    """Check the whole hash chain; name the first broken record."""
    log = _log(ctx)
    if not log.path.exists():  # a mistyped --home or FACEWATCH_HOME is not an intact log
        console.print(f"[bold red]no audit log[/] at {log.path}: check --home / FACEWATCH_HOME")
        raise typer.Exit(1)
    result = log.verify(head)
    if result.ok:
        console.print(f"audit log intact: {result.n_records} records ({log.path})")
        console.print(f"head {result.head} (note it; verify --head checks it later)")
        return
    console.print(
        f"[bold red]audit log broken[/] at record {result.first_bad_seq}: "
        f"{result.reason} ({log.path}); {result.n_records} records before it verify"
    )
    raise typer.Exit(1)
