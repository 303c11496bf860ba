"""``facewatch watchlist``: enrol, list and remove watch-listed people."""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import typer
from rich.table import Table

from jobs.common import console, current_actor, fail, get_context
from pipelines.engine import EnrolmentError, FaceEngine
from pipelines.home import Home
from pipelines.store import StoreError
from pipelines.watchlist import CATEGORIES, WatchlistError, Watchlists

app = typer.Typer(help="Watch lists: who is looked for, why, by whose authority, until when.")


def open_lists(ctx: typer.Context, vectors: bool = True) -> tuple[Home, Watchlists, FaceEngine]:
    settings = get_context(ctx).settings()
    engine = FaceEngine(settings)
    try:
        home = Home.open(settings, engine.info if vectors else None)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    return home, Watchlists(home, engine.info, engine.embedder.default_threshold), engine


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"--expires must be a date YYYY-MM-DD, got {value!r}")
    return None


@app.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the person's name"),
    images: list[Path] = typer.Argument(..., help="one or more photos, one face each"),
    list_name: str = typer.Option("default", "--list", help="watch list"),
    category: str = typer.Option("other", help="|".join(CATEGORIES)),
    reason: str = typer.Option("", help="lawful basis or reason for listing"),
    expires: str | None = typer.Option(None, help="expiry date YYYY-MM-DD"),
    authorised_by: str | None = typer.Option(None, help="who authorised the listing"),
    minor: bool = typer.Option(False, help="the person is a minor"),
) -> None:
    """Enrol a person from photos. All photos must be usable, or no one is enrolled."""
    expires_on = _parse_date(expires)
    home, lists, engine = open_lists(ctx)
    try:
        faces = engine.load(warmup=False).probe_faces(images)
        pid = lists.add(
            name,
            faces,
            current_actor(),
            list_name,
            category,
            reason,
            expires_on,
            authorised_by,
            minor,
        )
    except (EnrolmentError, WatchlistError) as exc:
        fail(str(exc))
    finally:
        home.close()
    console.print(f"enrolled {name} as {pid} on list '{list_name}' ({len(images)} photo(s))")
    print(pid)


@app.command("ls")
def ls(
    ctx: typer.Context,
    list_name: str | None = typer.Option(None, "--list", help="only this list"),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout"),
    removed: bool = typer.Option(False, "--removed", help="include removed people"),
) -> None:
    """Show the lists (threshold, how it was set, expected FPIR) and the people on them."""
    home, lists, _ = open_lists(ctx, vectors=False)
    try:
        people = lists.people(list_name, include_removed=removed)
        summary = [lst for lst in lists.lists() if not list_name or lst["name"] == list_name]
    finally:
        home.close()
    if as_json:
        json.dump({"lists": summary, "people": people}, sys.stdout, default=str, indent=1)
        sys.stdout.write("\n")
        return
    for lst in summary:
        fpir = lst["expected_fpir"]
        expect = f"expected FPIR {fpir:.3%}" if fpir is not None else "FPIR not calibrated"
        console.print(
            f"list [bold]{lst['name']}[/]: {lst['active_people']} active, version "
            f"{lst['version']}, threshold {lst['threshold_in_force']:.3f} "
            f"({lst['threshold_how']}), {expect}"
        )
    table = Table(
        "person id", "name", "list", "category", "images", "added by", "added", "expires", "status"
    )
    for p in people:
        table.add_row(
            p["person_id"],
            p["name"],
            p["list_name"],
            p["category"],
            str(p["images"]),
            p["added_by"],
            p["created_at"][:10],
            p["expires_on"] or "-",
            p["status"],
        )
    console.print(table)


@app.command("rm")
def rm(ctx: typer.Context, person_id: str = typer.Argument(...)) -> None:
    """Remove a person: their embeddings and photos are deleted at once."""
    home, lists, _ = open_lists(ctx)
    try:
        person = lists.remove(person_id, current_actor())
    except WatchlistError as exc:
        fail(str(exc))
    finally:
        home.close()
    console.print(f"removed {person['name']} ({person_id}) from '{person['list_name']}'")
