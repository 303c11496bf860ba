"""``facewatch deployment``: start, end and report live deployments (purpose, place,
cameras, frozen list), the record police publish after each deployment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from jobs.cli.common import console, current_actor, fail
from jobs.cli.options import JsonOpt
from jobs.cli.watchlist import open_lists
from pipelines.deployments import Deployments

app = typer.Typer(help="Deployment records: why, where, which cameras, which frozen list.")


def _open(ctx: typer.Context):
    home, lists, _ = open_lists(ctx, vectors=False)
    return home, lists, Deployments(home.catalog, home.audit)


@app.command("start")
def start(
    ctx: typer.Context,
    purpose: str = typer.Option(..., help="why: the operation and its lawful purpose"),
    location: str = typer.Option(..., help="where the cameras are"),
    cameras: str = typer.Option(..., help="camera ids, comma-separated"),
    list_name: str = typer.Option(..., "--list", help="the watch list, frozen at start"),
) -> None:
    """Start a deployment: freezes the list's snapshot and records it; prints the id."""
    home, lists, deps = _open(ctx)
    try:
        dep = deps.start(lists, purpose, location, cameras.split(","), list_name, current_actor())
    finally:
        home.close()
    for cam, terms in dep["cameras"].items():
        if not terms["configured"]:
            console.print(f"[yellow]warning:[/] camera {cam} is not configured (yet)")
        if "configured_list" in terms:
            console.print(
                f"[yellow]warning:[/] camera {cam} is configured for list "
                f"{terms['configured_list'] or '(all lists)'}; the deployment uses {list_name}"
            )
    console.print(
        f"deployment {dep['deployment_id']} started: list '{list_name}' frozen as "
        f"{dep['snapshot_id']} (version {dep['list_version']}), {len(dep['cameras'])} camera(s)"
    )
    print(dep["deployment_id"])


@app.command("end")
def end(ctx: typer.Context, deployment_id: str = typer.Argument(...)) -> None:
    """End a deployment and record its numbers."""
    home, lists, deps = _open(ctx)
    try:
        dep = deps.end(deployment_id, current_actor(), lists=lists)
    finally:
        home.close()
    t = dep["summary_at_end"]["totals"]
    precision = "n/a" if t["precision"] is None else f"{t['precision']:.1%}"
    console.print(
        f"deployment {deployment_id} ended: {t['hours']:.2f} h, {t['faces_scanned']} faces "
        f"scanned, {t['alerts']} alerts ({t['confirmed']} confirmed, {t['rejected']} rejected, "
        f"{t['pending']} pending), precision {precision}"
    )


@app.command("report")
def report(
    ctx: typer.Context,
    deployment_id: str = typer.Argument(...),
    out: Path = typer.Option(Path("reports"), help="folder for <id>.json and <id>.html"),
) -> None:
    """Write the post-deployment report (JSON and a one-page HTML); the export is audited."""
    home, _, deps = _open(ctx)
    try:
        json_path, html_path = deps.write_report(deployment_id, out, current_actor())
    except OSError as exc:
        fail(f"cannot write the report to {out}: {exc.strerror}")
    finally:
        home.close()
    console.print(f"wrote {json_path} and {html_path}")


@app.command("ls")
def ls(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List deployments."""
    home, _, deps = _open(ctx)
    try:
        rows = deps.all()
    finally:
        home.close()
    if as_json:
        json.dump(rows, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return
    table = Table("id", "purpose", "location", "list", "cameras", "started", "ended")
    for d in rows:
        table.add_row(
            d["deployment_id"],
            d["purpose"],
            d["location"],
            f"{d['list_name']} v{d['list_version']}",
            ",".join(d["cameras"]),
            d["started_at"],
            d["ended_at"] or "running",
        )
    console.print(table)
