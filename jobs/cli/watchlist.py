"""``facewatch watchlist``: enrol, list and remove watch-listed people."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from jobs.archive.runtime import local_engine
from jobs.cli.common import EXIT_PARTIAL, console, current_actor, fail, get_context
from jobs.cli.options import BatchSizeOpt, JsonOpt, identity_dir
from pipelines.engine import FaceEngine
from pipelines.home import Home
from pipelines.schemas import CalibrationRecord
from pipelines.store import StoreError
from pipelines.text import shown
from pipelines.watchlist import CATEGORIES, WatchlistError, Watchlists

app = typer.Typer(help="Watch lists: who is looked for, why, by whose authority, until when.")


def open_lists(ctx: typer.Context, vectors: bool = True) -> tuple[Home, Watchlists, FaceEngine]:
    settings = get_context(ctx).settings()
    engine = local_engine(settings)
    try:
        home = Home.open(settings, engine.info if vectors else None)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    return home, watchlists(home, engine), engine


def watchlists(home: Home, engine: FaceEngine) -> Watchlists:
    e = engine.embedder
    return Watchlists(home, engine.info, e.default_threshold, e.default_review_threshold)


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
    source: str | None = typer.Option(
        None, help="where the photos came from, e.g. 'custody image 2026-03'"
    ),
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
            image_source=source,
            warn=lambda msg: console.print(f"[yellow]warning:[/] {msg}"),
        )
    finally:
        home.close()
    console.print(f"enrolled {name} as {pid} on list '{list_name}' ({len(images)} photo(s))")
    advice = enrolment_advice(engine, [f.borderline for f in faces])
    if advice:
        console.print(f"[yellow]warning:[/] {advice}")
    print(pid)


def enrolment_advice(engine: FaceEngine, borderline: list[tuple[str, ...]]) -> str:
    """What to tell an officer about an enrolment that will be found less often."""
    e = engine.embedder
    notes = []
    if len(borderline) == 1 and e.measured_tpir:
        one, three = e.measured_tpir[1], e.measured_tpir[3]
        notes.append(
            f"one photo: expect about {one:.0%} of this person's appearances to be found at "
            f"the alert tier (FPIR 1e-3), against {three:.0%} with 3 photos (measured, "
            "docs: Accuracy); add more photos with facewatch watchlist add"
        )
    weak = sorted({gate for b in borderline for gate in b})
    if weak:
        notes.append(
            f"{sum(map(bool, borderline))} photo(s) only just pass the quality gates "
            f"({', '.join(weak)}); a larger, sharper, frontal photo will be found more often"
        )
    return "; ".join(notes)


@app.command("ls")
def ls(
    ctx: typer.Context,
    list_name: str | None = typer.Option(None, "--list", help="only this list"),
    as_json: JsonOpt = False,
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
        console.print(_list_line(lst), soft_wrap=True)  # one line each: greppable
    table = Table(
        "person id", "name", "list", "category", "images", "added by", "added", "expires", "status"
    )
    notes = []
    for p in people:  # names as stored: escaped, never markup or terminal control
        cells: tuple[object, ...] = (p["person_id"], p["name"], p["list_name"], p["category"])
        cells += (p["images"],)
        cells += (p["added_by"], p["created_at"][:10], p["expires_on"] or "-", p["status"])
        table.add_row(*(Text(shown(c)) for c in cells))
        if _person_notes(p):
            notes.append(Text(f"{shown(p['person_id'])} {shown(p['name'])}: {_person_notes(p)}"))
    console.print(table)
    if notes:  # who will be found less often than they could be, and what helps
        console.print("notes:")
        for line in notes:
            console.print(line)


def _list_line(lst: Mapping[str, Any]) -> str:
    n = lst["active_people"]

    def rate(value: float | None, what: str) -> str:
        return (
            f"expected {what} {value:.3%} at {n} people"
            if value is not None
            else (f"{what} not calibrated")
        )

    return (
        f"list [bold]{safe(lst['name'])}[/]: {n} active, version {lst['version']}\n"
        f"  alert tier:  threshold {lst['threshold_in_force']:.3f} "
        f"({safe(lst['threshold_how'])}), "
        f"{rate(lst['expected_fpir'], 'FPIR')}\n"
        f"  review tier: threshold {lst['review_threshold_in_force']:.3f} "
        f"({safe(lst['review_threshold_how'])}), "
        f"{rate(lst['expected_candidate_rate'], 'false-candidate rate')}"
    )


def _person_notes(p: Mapping[str, Any]) -> str:
    """Why a person may be found less often than they could be."""
    if p["status"] != "active":
        return ""
    notes = []
    if p["images"] == 1:
        notes.append("1 photo: add more")
    if p["borderline"]:
        gates = sorted(set(p["borderline"].split(",")))
        notes.append(f"photo only just passes: {', '.join(gates)}")
    if p["images_single_pass"]:
        notes.append("embedded without photo TTA: watchlist reembed")
    return "; ".join(notes)


def safe(value: object) -> str:
    """Stored text inside a rich markup string: escaped for the terminal and for markup."""
    return escape(shown(value))


@app.command("rm")
def rm(
    ctx: typer.Context,
    person_id: str = typer.Argument(...),
    reason: str = typer.Option("", "--reason", help="why (recorded in the audit log)"),
) -> None:
    """Remove a person: their embeddings and photos are deleted at once."""
    home, lists, _ = open_lists(ctx)
    try:
        person = lists.remove(person_id, current_actor(), reason)
    finally:
        home.close()
    console.print(f"removed {person['name']} ({person_id}) from '{person['list_name']}'")


@app.command("policy")
def policy(
    ctx: typer.Context,
    list_name: str = typer.Argument(..., help="watch list"),
    size_cap: int | None = typer.Option(None, min=1, help="most active people on the list"),
    allow_minors: bool | None = typer.Option(
        None, "--allow-minors/--no-minors", help="may the list hold people flagged as minors"
    ),
) -> None:
    """Set a list's size cap and whether it may hold minors (audited)."""
    home, lists, _ = open_lists(ctx, vectors=False)
    try:
        after = lists.set_policy(list_name, current_actor(), size_cap, allow_minors)
    finally:
        home.close()
    console.print(
        f"list '{list_name}': size cap {lists.size_cap(after)}, "
        f"minors {'allowed' if after['allow_minors'] else 'refused'}"
    )


@app.command("calibrate")
def calibrate(
    ctx: typer.Context,
    list_name: str = typer.Option(..., "--list", help="watch list to calibrate"),
    distractors: Path = identity_dir(
        "--distractors", "DIR/<identity>/<images> of people NOT on the list (non-mated faces)"
    ),
    target_fpir: float = typer.Option(
        0.001,
        "--target-fpir",
        min=1e-6,
        max=0.5,
        help="alert tier: false alarms per non-mated face",
    ),
    target_candidate_rate: float | None = typer.Option(
        None,
        "--target-candidate-rate",
        min=1e-6,
        max=0.5,
        help="review tier: false candidates per non-mated face (retrospective work only); "
        "default 10 x --target-fpir (0.01 at the default FPIR), at most 0.5",
    ),
    per_person: bool = typer.Option(
        False,
        "--per-person",
        help="a threshold per person from a background cohort (half the distractors): "
        "tames people many strangers resemble; see docs: Accuracy",
    ),
    batch_size: BatchSizeOpt = 32,
    as_json: bool = typer.Option(False, "--json", help="print the calibration record as JSON"),
) -> None:
    """Measure the list against non-mated faces and set both thresholds: the alert tier for
    a target FPIR and the review tier for a target false-candidate rate."""
    from pipelines.evaluation.watchlist import EvaluationInputError

    if target_candidate_rate is None:
        target_candidate_rate = min(0.5, 10 * target_fpir)
    home, lists, engine = open_lists(ctx)
    try:
        home.audit.check()  # before minutes of measuring a threshold that cannot be set
        targets = (target_fpir, target_candidate_rate)
        record = _measure(lists, engine, list_name, distractors, targets, per_person, batch_size)
        how = lists.record_calibration(list_name, record, current_actor())
    except (WatchlistError, EvaluationInputError, ValueError) as exc:
        fail(str(exc))
    finally:
        home.close()
    if as_json:
        json.dump(record, sys.stdout, default=str)
        sys.stdout.write("\n")
        return
    _print_calibration(list_name, record, how)


def _measure(
    lists, engine, list_name, distractors, targets, per_person, batch_size
) -> CalibrationRecord:
    """The calibration record of ``list_name`` against the distractors' faces."""
    from pipelines.evaluation.calibration import calibrate as measure
    from pipelines.evaluation.calibration import calibrate_per_person, check_disjoint
    from pipelines.evaluation.faces import identity_images

    target_fpir, target_candidate_rate = targets
    gallery = lists.active_gallery(list_name)
    images = identity_images(distractors)
    check_disjoint(sorted(set(gallery.person_names)), list(images))
    faces = _distractor_faces(engine, [p for ps in images.values() for p in ps], batch_size)
    if per_person:
        ids = [name for name, ps in images.items() for _ in ps]
        return calibrate_per_person(
            gallery, faces, ids, target_fpir, distractors, target_candidate_rate
        )
    return measure(gallery, faces, target_fpir, distractors, target_candidate_rate)


def _print_calibration(list_name: str, record: CalibrationRecord, how: str) -> None:
    low, high = record["fpir_ci95"]
    console.print(
        f"list '{list_name}' ({record['list_size']} people): threshold "
        f"{record['threshold']:.4f} ({how}); measured FPIR {record['fpir']:.3%} "
        f"[95% CI {low:.3%}, {high:.3%}] = {record['false_alarms']}/{record['n_nonmated']} "
        f"non-mated faces; no face {record['no_face']}, rejected {record['rejected']}"
    )
    review = record["review"]
    low, high = review["rate_ci95"]
    console.print(
        f"review tier: threshold {review['threshold']:.4f}; measured false-candidate rate "
        f"{review['rate']:.3%} [95% CI {low:.3%}, {high:.3%}] = {review['false_alarms']}/"
        f"{record['n_nonmated']} non-mated faces (never used for live alerts)"
    )


@app.command("reembed")
def reembed(
    ctx: typer.Context,
    list_name: str = typer.Option(..., "--list", help="watch list whose photos to re-embed"),
    photos: list[Path] = typer.Option(
        ...,
        "--photos",
        exists=True,
        help="the enrolment photos (files or folders); matched to entries by content hash",
    ),
    reason: str = typer.Option("", "--reason", help="why (required; audited)"),
) -> None:
    """Re-embed a list's photos as enrolment now does (e.g. with photo TTA). Audited; run
    watchlist calibrate afterwards, as the scores move."""
    if not reason.strip():
        fail("re-embedding changes who is found: give --reason TEXT (audited)")
    from pipelines.images import ImageError, sha256_file

    files = [q for p in photos for q in (sorted(p.rglob("*")) if p.is_dir() else [p])]
    files = [f for f in files if f.is_file()]
    home, lists, engine = open_lists(ctx)
    try:
        wanted = {e["image_sha256"] for e in lists.people_entries(list_name)}
        faces, problems = {}, []
        engine.load(warmup=False)
        for f in files:
            digest = sha256_file(f)
            if digest not in wanted or digest in faces:
                continue
            try:
                faces[digest] = engine.probe_face(f)
            except ImageError as exc:
                problems.append(str(exc))
        done = lists.reembed(list_name, faces, current_actor(), reason)
    finally:
        home.close()
    for p in problems:
        console.print(f"[red]unusable:[/] {p}")
    console.print(
        f"list '{list_name}': re-embedded {len(done['reembedded'])} photo(s); "
        f"{len(done['missing'])} not given (left as they were). Recalibrate: "
        "facewatch watchlist calibrate"
    )


def _distractor_faces(engine: FaceEngine, paths: list[Path], batch_size: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from pipelines.evaluation.faces import extract_faces

    engine.load(warmup=False)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bar:
        task = bar.add_task("non-mated images", total=len(paths))
        return extract_faces(
            engine.detector,
            engine.embedder,
            engine.gate,
            paths,
            batch_size,
            lambda _s, done, _t: bar.update(task, completed=done),
        )


@app.command("import")
def import_manifest(
    ctx: typer.Context,
    manifest: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        help="CSV: person_ref,name,photo,category,reason,expires,authorised_by,source "
        "(optionally ,minor); photo paths relative to the CSV's folder",
    ),
    list_name: str = typer.Option(..., "--list", help="watch list to enrol into"),
    reason: str = typer.Option("", "--reason", help="why (required; audited; a row's default)"),
    out: Path = typer.Option(
        Path("facewatch-import"), "--out", help="folder for errors.csv/.parquet, summary.json"
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to use (default: a local one on 127.0.0.1)"
    ),
) -> None:
    """Enrol many people from a manifest of photos, through the face pool. The whole file
    is checked first; a rerun adds nothing; unusable photos go to an errors table and the
    rest are enrolled (exit code 3 when there were any)."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from jobs.archive import runtime
    from jobs.archive.watchlist_import import BulkImport
    from pipelines.catalog import today

    runtime.prepare_env(local=ray_address is None)
    home, lists, engine = open_lists(ctx)
    settings = home.settings

    @contextmanager
    def pool():
        local = runtime.start_ray(ray_address, settings)
        with runtime.face_pool(settings, engine.info, cleanup=not local) as app_name:
            yield app_name

    bar = Progress(TextColumn("[bold]photos"), BarColumn(), MofNCompleteColumn(), console=console)
    task = bar.add_task("photos", total=None)
    try:
        with bar:
            job = BulkImport(home, lists, list_name, current_actor(), reason)
            result = job.run(
                manifest,
                pool,
                settings,
                today(),
                lambda done, total: bar.update(task, completed=done, total=total),
            )
    finally:
        home.close()
    _report_import(result, list_name, out)
    if result.errors:
        raise typer.Exit(EXIT_PARTIAL)


def _report_import(result, list_name: str, out: Path) -> None:
    """The import's errors table and summary on disk, each error and the counts printed."""
    from jobs.archive.report import write_summary
    from jobs.archive.watchlist_import import write_errors

    write_errors(out, result.errors)
    write_summary(out, result.counts())
    for e in result.errors:
        console.print(
            Text(
                f"line {e['line']} ({shown(e['person_ref'])}, {shown(e['photo'])}): "
                f"{shown(e['reason'])}",
                style="red",
            )
        )
    c = result.counts()
    console.print(
        f"list '{safe(list_name)}': {c['people_added']} people added, {c['people_extended']} "
        f"given new photos, {c['people_unchanged']} unchanged, {c['people_failed']} not "
        f"enrolled; photos: {c['photos_enrolled']} enrolled, {c['photos_skipped']} already "
        f"enrolled, {c['photos_failed']} unusable; {c['wall_s']:.1f} s. "
        f"Errors: {out / 'errors.csv'}"
    )
