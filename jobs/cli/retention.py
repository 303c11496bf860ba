"""``facewatch retention``: delete what is past its retention period (audited)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from jobs.cli.common import console, current_actor
from jobs.cli.options import JsonOpt
from jobs.cli.watchlist import open_lists
from pipelines.retention import run_retention

app = typer.Typer(help="Retention: delete alerts, matches, indexed faces and expired entries.")


@app.command("run")
def run(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="count what is due, delete nothing"),
    out: list[Path] = typer.Option(
        [], "--out", help="search output folder whose thumbs/ to clean too (repeatable)"
    ),
    as_json: JsonOpt = False,
) -> None:
    """Delete everything due under governance.retention, from Milvus and disk."""
    home, lists, _ = open_lists(ctx)
    try:
        result = run_retention(
            lists, home.settings.governance.retention, current_actor(), dry_run, out_dirs=tuple(out)
        )
    finally:
        home.close()
    if as_json:
        json.dump(result.row(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    table = Table("data class", "older than", "would delete" if dry_run else "deleted", "files")
    for name, n in result.deleted.items():
        table.add_row(name, result.cutoffs.get(name, ""), str(n), str(result.files.get(name, 0)))
    for name, why in result.skipped.items():
        table.add_row(name, why, "-", "-")
    console.print(table)
