"""``facewatch search``: find watch-listed people (or the person in a photo) in archive video."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jobs import runtime
from jobs.common import (
    EXIT_PARTIAL,
    EXIT_UNEXPECTED,
    console,
    current_actor,
    emit_json,
    fail,
    get_context,
    json_stdout,
)
from jobs.report import link_media, render_report, sightings_table, write_outputs, write_summary
from jobs.review import rank
from jobs.search import Progress as SearchProgress
from jobs.search import SearchResult
from jobs.search_setup import (
    SearchSetup,
    SetupError,
    StoreDownError,
    check_numbers,
    check_videos,
)


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
    fps: float | None = typer.Option(None, "--fps", min=0.05, max=60, help="frames per second"),
    threshold: float | None = typer.Option(
        None, "--threshold", help="override the alert tier's threshold: sightings (audited)"
    ),
    review_threshold: float | None = typer.Option(
        None,
        "--review-threshold",
        help="override the review tier's threshold: candidates, never above the alert "
        "threshold (audited)",
    ),
    out: Path = typer.Option(Path("facewatch-search"), "--out", help="output folder"),
    case: str | None = typer.Option(None, "--case", help="case reference (required by default)"),
    reason: str | None = typer.Option(None, "--reason", help="why this search is necessary"),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to use (default: a local one on 127.0.0.1)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print sightings as JSON lines only"),
    indexed: bool = typer.Option(
        False, "--indexed", help="search the face index (facewatch index) instead of decoding"
    ),
    top_k: int = typer.Option(1000, "--top-k", help="with --indexed: nearest faces per photo"),
) -> None:
    """Search archive video for watch-listed people and report sightings."""
    if indexed:
        from jobs.cli_index import search_indexed

        search_indexed(
            ctx, paths or [], probe, threshold, review_threshold, top_k, out, case, reason, as_json
        )
        return
    if not paths:
        fail("give video files or folders to search (or --probe IMAGE --indexed)")
    c = get_context(ctx)
    runtime.prepare_env(local=ray_address is None)  # before anything starts gRPC
    settings = c.settings()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    try:
        check_numbers(fps, threshold)
        check_numbers(threshold=review_threshold)
        check_videos(paths, settings)
        setup = SearchSetup.prepare(
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
        )
    except SetupError as exc:
        fail(str(exc))
    try:
        with json_stdout(as_json), runtime.pool_errors_fail():  # no Ray output in the JSON
            result = run_with_progress(setup, out, fps, ray_address, quiet=as_json)
    except StoreDownError as exc:
        fail(store_down_message(exc), EXIT_UNEXPECTED)
    finally:
        setup.close()
    report_outputs(setup, result, out, as_json)
    raise typer.Exit(_exit_code(result))


def run_with_progress(setup: SearchSetup, out: Path, fps, ray_address, quiet: bool) -> SearchResult:
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
        return setup.run(out, fps, ray_address, progress)


def report_outputs(setup: SearchSetup, result: SearchResult, out: Path, as_json: bool) -> None:
    sightings = result.sightings
    link_media(sightings, out)
    errors = [e.row() for e in result.errors]
    write_outputs(out, sightings, result.matches, errors)
    summary = setup.summary(result)
    write_summary(out, setup.numbers(result))
    report = render_report(out, sightings, summary, errors)
    if as_json:
        for s in sightings:
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


def store_down_message(exc: StoreDownError) -> str:
    """Which files' matches are not stored, and how to finish them."""
    names = "\n".join(f"  {p}" for p in exc.files) or "  (none)"
    return (
        f"the store was unreachable for {exc.waited_s:.0f} s (search.store_retry_s): "
        f"{exc.cause}\nthe search stopped; the matches of these files are NOT stored:\n"
        f"{names}\nrerun the same command once the store is back: files already complete "
        "are skipped, these are searched"
    )
