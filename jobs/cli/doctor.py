"""``facewatch doctor``: find and stop the Ray processes a killed facewatch left behind.

The rules for what counts as left behind are in ``jobs/archive/orphans.py``: only this user's
processes that name facewatch's own Ray temp folder, whose parent is PID 1 or whose
session's starter is gone. A running search or server is never touched.
"""

from __future__ import annotations

import json

import typer

from jobs.archive.orphans import find_orphans, stop
from jobs.cli.common import console
from jobs.cli.options import JsonOpt
from pipelines.errors import EXIT_UNEXPECTED


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    dry_run: bool = typer.Option(False, "--dry-run", help="list them, stop nothing"),
    as_json: JsonOpt = False,
) -> None:
    """Find Ray processes left by a facewatch run that was killed, and stop them."""
    from serve.local import ray_temp_dir

    root = ray_temp_dir()
    orphans = find_orphans(root)
    left = [] if dry_run else stop(orphans)
    report = {
        "ray_temp_dir": str(root),
        "orphans": [p.row() for p in orphans],
        "stopped": 0 if dry_run else len(orphans) - len(left),
        "would_not_stop": [p.pid for p in left],
    }
    if as_json:
        print(json.dumps(report))
    else:
        for p in orphans:
            console.print(f"left behind: pid {p.pid} {p.name} ({p.session or 'no session'})")
        verb = "found (dry run, not stopped)" if dry_run else "stopped"
        console.print(f"{len(orphans)} orphaned Ray process(es) of facewatch {verb}")
    if left:
        console.print(f"[red]error:[/] could not stop {', '.join(str(p.pid) for p in left)}")
        raise typer.Exit(EXIT_UNEXPECTED)
