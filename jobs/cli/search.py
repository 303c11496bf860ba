"""``facewatch search``: find watch-listed people (or the person in a photo) in archive video."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jobs.archive import runtime
from jobs.archive.report import (
    sightings_table,
)
from jobs.archive.review import rank
from jobs.archive.search import Progress as SearchProgress
from jobs.archive.search import SearchResult
from jobs.archive.search_progress import ProgressFile
from jobs.archive.search_setup import SearchSetup, check_numbers, check_videos
from jobs.cli.common import (
    EXIT_PARTIAL,
    console,
    current_actor,
    emit_json,
    fail,
    get_context,
    json_stdout,
)
from jobs.cli.options import (
    CaseOpt,
    FpsOpt,
    OutOpt,
    RayAddressOpt,
    ReviewThresholdOpt,
    ThresholdOpt,
)
from pipelines.errors import EXIT_UNEXPECTED


def register(app: typer.Typer) -> None:
    app.command("search")(search)


def search(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(
        None, help="video files or folders (searched recursively; with --indexed, optional)"
    ),
    list_name: str | None = typer.Option(
        None, "--list", help="watch list to match (default: all active entries)"
    ),
    probe: list[Path] = typer.Option(
        [], "--probe", help="photo of the person to find, instead of a watch list (repeatable)"
    ),
    fps: FpsOpt = None,
    threshold: ThresholdOpt = None,
    review_threshold: ReviewThresholdOpt = None,
    out: OutOpt = Path("facewatch-search"),
    case: CaseOpt = None,
    reason: str | None = typer.Option(None, "--reason", help="why this search is necessary"),
    ray_address: RayAddressOpt = None,
    as_json: bool = typer.Option(False, "--json", help="print sightings as JSON lines only"),
    indexed: bool = typer.Option(
        False, "--indexed", help="search the face index (facewatch index) instead of decoding"
    ),
    top_k: int = typer.Option(1000, "--top-k", help="with --indexed: nearest faces per photo"),
    progress_file: Path | None = typer.Option(
        None, "--progress-file", help="also write progress to this JSON file (the workspace)"
    ),
    handoff: Path | None = typer.Option(
        None,
        "--handoff",
        hidden=True,
        help="the server holds the milvus-lite store: leave matches here for it (the workspace)",
    ),
) -> None:
    """Search archive video for watch-listed people and report sightings."""
    if indexed:
        from jobs.cli.index import search_indexed

        search_indexed(
            ctx, paths or [], probe, threshold, review_threshold, top_k, out, case, reason, as_json
        )
        return
    if not paths:
        fail("give video files or folders to search (or --probe IMAGE --indexed)")
    runtime.prepare_env(local=ray_address is None)  # before anything starts gRPC
    settings = get_context(ctx).settings()
    check_numbers(fps, threshold)
    thresholds = (threshold, review_threshold)
    setup = _prepare(settings, paths, list_name, probe, thresholds, case, reason, handoff)
    try:
        with json_stdout(as_json):  # no Ray output in the JSON
            result = run_with_progress(setup, out, fps, ray_address, as_json, progress_file)
    finally:
        setup.close()
    report_outputs(setup, result, out, as_json)
    raise typer.Exit(_exit_code(result))


def _prepare(
    settings, paths, list_name, probe, thresholds, case, reason, handoff=None
) -> SearchSetup:
    """Everything checked (inputs, list, case, purpose) before any work starts."""
    threshold, review_threshold = thresholds
    check_numbers(threshold=review_threshold)
    check_videos(paths, settings)
    return SearchSetup.prepare(
        settings,
        paths,
        list_name,
        probe,
        threshold,
        case,
        reason,
        current_actor(),
        warn=lambda msg: console.print(f"[yellow]warning:[/] {msg}"),
        review_threshold=review_threshold,
        handoff=handoff,
    )


def run_with_progress(
    setup: SearchSetup, out: Path, fps, ray_address, quiet: bool, progress_file: Path | None = None
) -> SearchResult:
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    )
    counts = {"faces": 0, "matches": 0}
    with bar:
        files_task = bar.add_task("files", total=None, info="")
        frames_task = bar.add_task("frames", total=None, info="starting Ray and the face pool")

        def total(files: int, frames: int) -> None:
            bar.update(files_task, total=files)
            bar.update(frames_task, total=frames, info="")

        def advance(frames: int, faces: int, close: int) -> None:
            counts["faces"] += faces
            counts["matches"] += close
            info = f"faces {counts['faces']}  candidate matches {counts['matches']}"
            bar.update(frames_task, advance=frames, info=info)

        progress = SearchProgress(total, advance, lambda _p: bar.advance(files_task))
        if progress_file is None:
            return setup.run(out, fps, ray_address, progress)
        noted = ProgressFile(progress_file, fps or setup.settings.search.fps)
        try:
            result = setup.run(out, fps, ray_address, noted.callbacks(progress))
        except BaseException:
            noted.finish("failed")
            raise
        noted.finish("done")
        return result


def report_outputs(setup: SearchSetup, result: SearchResult, out: Path, as_json: bool) -> None:
    summary, report = setup.write_outputs(result, out)
    if as_json:
        for s in result.sightings:
            emit_json(s.row())
        return
    _print_summary(result, summary)
    console.print(f"report: {report.resolve()}")


def _print_summary(result: SearchResult, summary: dict) -> None:
    table = sightings_table(rank(result.sightings), "Sightings, then candidates")
    console.print(table)
    for e in result.errors:
        console.print(f"[red]failed:[/] {e.path}: {e.reason}")
    console.print(", ".join(f"{k}: {v}" for k, v in summary.items()))


def _exit_code(result: SearchResult) -> int:
    if not result.errors:
        return 0
    return EXIT_PARTIAL if result.files else EXIT_UNEXPECTED
