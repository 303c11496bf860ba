"""``facewatch index`` and ``facewatch search --probe IMAGE --indexed``: the face index."""

from __future__ import annotations

from pathlib import Path

import typer

from jobs.archive.index import Purpose, index_and_record
from jobs.archive.index_search import MAX_TOP_K, IndexedRequest, search_index_and_record
from jobs.archive.report import (
    sightings_table,
)
from jobs.archive.runtime import local_engine
from jobs.archive.search_setup import (
    check_numbers,
    check_purpose,
    check_videos,
    probe_gallery,
)
from jobs.cli.common import (
    EXIT_PARTIAL,
    console,
    current_actor,
    emit_json,
    fail,
    get_context,
    json_stdout,
)
from jobs.cli.options import CaseOpt, FpsOpt, OutOpt, RayAddressOpt
from pipelines.errors import EXIT_UNEXPECTED
from pipelines.home import Home

DEFAULT_TOP_K = 1000


def register(app: typer.Typer) -> None:
    app.command("index")(index)


def index(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="video files or folders (indexed recursively)"),
    case: CaseOpt = None,
    reason: str | None = typer.Option(None, "--reason", help="why this archive is indexed"),
    fps: FpsOpt = None,
    out: OutOpt = Path("facewatch-index"),
    ray_address: RayAddressOpt = None,
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON only"),
) -> None:
    """Store every quality-passing face of archive video in the face index (for --indexed)."""
    c = get_context(ctx)
    settings = c.settings()
    relaxed = check_purpose(settings, case, reason)
    check_numbers(fps)
    check_videos(paths, settings)
    engine = local_engine(settings)
    home = Home.open(settings, engine.info)
    purpose = Purpose(current_actor(), case or "", reason or "", relaxed)
    if not as_json:
        console.print("indexing (starting Ray and the face pool)...")
    try:
        with json_stdout(as_json):  # no Ray output in the JSON
            run, summary = index_and_record(
                settings, home, engine.info, paths, purpose, out, fps, ray_address
            )
    finally:
        home.close()
    if as_json:
        emit_json(summary)
    else:
        for e in run.result.errors:
            console.print(f"[red]failed:[/] {e.path}: {e.reason}")
        console.print(", ".join(f"{k}: {v}" for k, v in summary.items() if k != "per_file"))
    if run.result.errors:
        raise typer.Exit(EXIT_PARTIAL if run.result.files else EXIT_UNEXPECTED)


def search_indexed(
    ctx: typer.Context,
    paths: list[Path],
    probes: list[Path],
    threshold: float | None,
    review_threshold: float | None,
    top_k: int,
    out: Path,
    case: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """``facewatch search --probe IMAGE --indexed``: the face index instead of decoding."""
    settings = get_context(ctx).settings()
    relaxed = check_purpose(settings, case, reason)
    if not probes:
        fail("--indexed searches for the person in a photo: give --probe IMAGE")
    if not 1 <= top_k <= MAX_TOP_K:
        fail(f"--top-k must be between 1 and {MAX_TOP_K}")
    engine = local_engine(settings)
    gallery, target = probe_gallery(engine, probes, threshold, review_threshold)
    home = Home.open(settings, engine.info)
    purpose = Purpose(current_actor(), case or "", reason or "", relaxed)
    request = IndexedRequest(paths, top_k, threshold, review_threshold)
    try:
        result, summary, report = search_index_and_record(
            settings, home, gallery, target, request, purpose, out
        )
    finally:
        home.close()
    if result.faces_in_index == 0:
        console.print("[yellow]warning:[/] the face index is empty: run facewatch index")
    if as_json:
        for s in result.sightings:
            emit_json(s.row())
        return
    table = sightings_table(result.sightings, "Sightings (from the face index)", with_person=False)
    console.print(table)
    if result.saturated:
        console.print("[yellow]warning:[/] every face returned was a match: raise --top-k")
    console.print(", ".join(f"{k}: {v}" for k, v in summary.items()))
    console.print(f"report: {report.resolve()}")
