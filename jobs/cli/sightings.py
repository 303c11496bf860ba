"""``facewatch sightings``: review a search's sightings and candidates from the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from jobs.archive.report import shown_precision
from jobs.archive.review import (
    DECISIONS,
    SightingReviews,
    load_sightings,
    refresh_outputs,
)
from jobs.cli.common import console, current_actor, fail, get_context
from pipelines.home import Home
from pipelines.schemas import Sighting

app = typer.Typer(help="Investigators' decisions on sightings and candidates (audited).")

KEYS = {"y": "confirmed", "n": "rejected", "u": "unsure"}


def _open(ctx: typer.Context, out: Path) -> tuple[Home, list[Sighting], str]:
    sightings = load_sightings(out)
    summary = out / "summary.json"
    case = (
        json.loads(summary.read_text(encoding="utf-8")).get("case", "") if summary.is_file() else ""
    )
    try:
        home = Home.open(get_context(ctx).settings(), None)
    except ValueError as exc:
        fail(str(exc))
    return home, sightings, case


@app.command("review")
def review(
    ctx: typer.Context,
    out: Path = typer.Argument(..., exists=True, file_okay=False, help="a search's --out folder"),
    tier: str = typer.Option("all", "--tier", help="sighting, candidate or all"),
    again: bool = typer.Option(False, "--again", help="also show rows already decided"),
) -> None:
    """One row at a time: y confirm, n reject, u unsure, s skip, q quit. Sightings come
    first, then candidates, each ranked by score; every decision is audited."""
    if tier not in ("sighting", "candidate", "all"):
        fail("--tier is sighting, candidate or all")
    home, sightings, case = _open(ctx, out)
    try:
        reviews = SightingReviews(home)
        decided = reviews.decisions([s.sighting_id for s in sightings])
        todo = [
            s
            for s in sightings
            if (tier == "all" or s.tier == tier) and (again or s.sighting_id not in decided)
        ]
        console.print(f"{len(todo)} to review in {out} (case {case or '-'})")
        for i, s in enumerate(todo, 1):
            _show(s, out, i, len(todo), decided.get(s.sighting_id))
            answer = _ask()
            if answer == "q":
                break
            if answer == "s":
                continue
            note = typer.prompt("note (optional)", default="", show_default=False)
            decided[s.sighting_id] = reviews.decide(
                s, out, case, KEYS[answer], note, current_actor()
            )
        result = refresh_outputs(out, sightings, decided)
    finally:
        home.close()
    _print_precision(result)


@app.command("decide")
def decide(
    ctx: typer.Context,
    out: Path = typer.Argument(..., exists=True, file_okay=False, help="a search's --out folder"),
    sighting_id: str = typer.Argument(..., help="the sighting_id column of sightings.parquet"),
    decision: str = typer.Option(..., "--decision", help="|".join(DECISIONS)),
    note: str = typer.Option("", "--note", help="why (audited)"),
) -> None:
    """Record one decision without prompts (for scripts); audited like review."""
    home, sightings, case = _open(ctx, out)
    try:
        match = [s for s in sightings if s.sighting_id == sighting_id]
        if not match:
            fail(f"no sighting {sighting_id} in {out}")
        reviews = SightingReviews(home)
        reviews.decide(match[0], out, case, decision, note, current_actor())
        result = refresh_outputs(
            out, sightings, reviews.decisions([s.sighting_id for s in sightings])
        )
    finally:
        home.close()
    _print_precision(result)


def _show(s: Sighting, out: Path, i: int, n: int, before: dict | None) -> None:
    thumb = (out / s.thumbnail).resolve() if s.thumbnail else "-"
    photo = (out / s.watchlist_photo).resolve() if s.watchlist_photo else "-"
    console.rule(f"{i}/{n}  {s.tier.upper()}")
    console.print(
        f"[bold]{s.person_name}[/] ({s.list_name}) in {s.source_path}\n"
        f"  {s.start_s:.1f}s - {s.end_s:.1f}s, best score {s.best_score:.3f} at "
        f"{s.best_frame_s:.1f}s ({s.best_score - s.threshold:+.3f} to the alert threshold, "
        f"{s.best_score - s.review_threshold:+.3f} to the review threshold)\n"
        f"  face found:      {thumb}\n  watch-list photo: {photo}"
    )
    if before:
        console.print(f"  decided before: {before['decision']} by {before['decided_by']}")


def _ask() -> str:
    while True:
        answer = typer.prompt("[y]es it is them / [n]o / [u]nsure / [s]kip / [q]uit").strip()
        if answer[:1].lower() in ("y", "n", "u", "s", "q"):
            return answer[:1].lower()
        console.print("answer y, n, u, s or q")


def _print_precision(result: dict) -> None:
    table = Table("tier", "total", "confirmed", "rejected", "unsure", "undecided", "precision")
    for tier, r in result.items():
        table.add_row(
            tier,
            *(str(r[k]) for k in ("total", "confirmed", "rejected", "unsure", "undecided")),
            shown_precision(r),
        )
    console.print(table)
