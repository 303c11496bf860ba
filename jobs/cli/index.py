"""``facewatch index`` and ``facewatch search --probe IMAGE --indexed``: the face index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from jobs.archive import runtime
from jobs.archive.index import index_archive
from jobs.archive.index_search import MAX_TOP_K, IndexedSearch, IndexedSearchResult, PathScope
from jobs.archive.report import (
    ERROR_SCHEMA,
    link_media,
    render_report,
    sightings_table,
    write_outputs,
    write_table,
)
from jobs.archive.search_setup import (
    SetupError,
    _check_purpose,
    check_numbers,
    check_videos,
    probe_gallery,
)
from jobs.cli.common import (
    EXIT_PARTIAL,
    EXIT_UNEXPECTED,
    console,
    current_actor,
    emit_json,
    fail,
    get_context,
    json_stdout,
    local_engine,
)
from pipelines.config import Settings
from pipelines.engine import FaceEngine
from pipelines.home import Home
from pipelines.paths import resolved
from pipelines.schemas import EmbedderMismatchError
from pipelines.store import FACES, StoreError

DEFAULT_TOP_K = 1000


def register(app: typer.Typer) -> None:
    app.command("index")(index)


def _open_home(settings: Settings, engine: FaceEngine) -> Home:
    try:
        return Home.open(settings, engine.info)
    except (StoreError, EmbedderMismatchError) as exc:
        fail(str(exc))
        raise  # unreachable: fail exits


def _purpose(settings: Settings, case: str | None, reason: str | None) -> bool:
    try:
        return _check_purpose(settings, case, reason)
    except SetupError as exc:
        fail(str(exc))
        raise


def index(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="video files or folders (indexed recursively)"),
    case: str | None = typer.Option(None, "--case", help="case reference (required by default)"),
    reason: str | None = typer.Option(None, "--reason", help="why this archive is indexed"),
    fps: float | None = typer.Option(None, "--fps", min=0.05, max=60, help="frames per second"),
    out: Path = typer.Option(Path("facewatch-index"), "--out", help="folder for the summary"),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster to use (default: a local one on 127.0.0.1)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON only"),
) -> None:
    """Store every quality-passing face of archive video in the face index (for --indexed)."""
    c = get_context(ctx)
    settings = c.settings()
    relaxed = _purpose(settings, case, reason)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    try:
        check_numbers(fps)
        check_videos(paths, settings)
    except SetupError as exc:
        fail(str(exc))
    engine = local_engine(settings)
    home = _open_home(settings, engine)
    try:
        home.audit.append(
            current_actor(),
            "index",
            case=case or "",
            reason=reason or "",
            purpose_relaxed=relaxed,
            paths=[str(resolved(p)) for p in paths],
            fps=fps or settings.search.fps,
        )
        out.mkdir(parents=True, exist_ok=True)
        if not as_json:
            console.print("indexing (starting Ray and the face pool)...")
        with json_stdout(as_json), runtime.pool_errors_fail():  # no Ray output in the JSON
            run = index_archive(
                settings,
                home,
                engine.info,
                paths,
                case or "",
                out,
                fps,
                ray_address,
            )
        total = home.vectors().count(FACES)
        errors = [e.row() for e in run.result.errors]
        summary = {
            "case": case or "(none)",
            "files indexed": run.counts.files,
            "files failed": len(errors),
            "video_s": round(run.result.video_s, 1),
            "frames analysed": sum(f.frames for f in run.result.files),
            "faces detected": sum(f.faces for f in run.result.files),
            "faces indexed": run.counts.faces,
            "rows replaced from an earlier indexing": run.counts.replaced,
            "faces in the index": total,
            "wall_s": round(run.result.wall_s, 1),
            "per_file": run.counts.per_file,
        }
        home.audit.append(
            current_actor(),
            "index.done",
            case=case or "",
            files=run.counts.per_file,
            faces=run.counts.faces,
            replaced=run.counts.replaced,
            errors=errors,
        )
    finally:
        home.close()
    write_table(errors, ERROR_SCHEMA, out / "errors.parquet")
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if as_json:
        emit_json(summary)
    else:
        for e in errors:
            console.print(f"[red]failed:[/] {e['path']}: {e['reason']}")
        console.print(", ".join(f"{k}: {v}" for k, v in summary.items() if k != "per_file"))
    if errors:
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
    relaxed = _purpose(settings, case, reason)
    if not probes:
        fail("--indexed searches for the person in a photo: give --probe IMAGE")
    if not 1 <= top_k <= MAX_TOP_K:
        fail(f"--top-k must be between 1 and {MAX_TOP_K}")
    engine = local_engine(settings)
    try:
        gallery, target = probe_gallery(engine, probes, threshold, review_threshold)
    except SetupError as exc:
        fail(str(exc))
    home = _open_home(settings, engine)
    try:
        home.audit.append(
            current_actor(),
            "search",
            mode="indexed",
            case=case or "",
            reason=reason or "",
            purpose_relaxed=relaxed,
            target=target,
            paths=[str(resolved(p)) for p in paths],
            probe_sha256=list(gallery.entry_ids),
            threshold_override=threshold,
            review_threshold_override=review_threshold,
            top_k=top_k,
        )
        job = IndexedSearch(
            home.vectors(),
            gallery,
            settings.search.link_gap_s,
            settings.search.top_n,
            case or "",
        )
        scope = PathScope.of(paths, settings.search.video_extensions) if paths else None
        result = job.run(top_k, scope)
        if result.faces_in_index == 0:
            console.print("[yellow]warning:[/] the face index is empty: run facewatch index")
        out.mkdir(parents=True, exist_ok=True)
        # results and face thumbnails leave the store for this folder: an export, audited
        # (retention finds the folder's thumbnails through this record)
        home.audit.append(
            current_actor(), "export.search", case=case or "", target=target,
            out=str(out.resolve()),
        )  # fmt: skip
        (out / "thumbs").mkdir(exist_ok=True)
        _persist(home, result, out, case or "")
    finally:
        home.close()
    summary = _summary(result, case, target, top_k)
    _report(result, out, summary, as_json)


def _persist(home: Home, result: IndexedSearchResult, out: Path, case: str) -> None:
    """Thumbnails next to the report, matches into Milvus, as an archive search does."""
    rows = []
    for m in result.matches:
        face_thumb = m.extra.pop("face_thumbnail", "")
        emb = m.extra.pop("embedding")
        if face_thumb and home.media.path(face_thumb).is_file():
            crop = home.media.path(face_thumb).read_bytes()
            (out / "thumbs" / f"{m.match_id}.jpg").write_bytes(crop)
            m.thumbnail = home.media.save("matches", m.match_id, crop)
        row = m.row()
        row["status"] = row.pop("extra").get("tier", "sighting")  # archive: the tier
        row["embedding"] = np.asarray(emb, np.float32)
        row["case_ref"] = case
        rows.append(row)
    if rows:
        home.vectors().upsert_matches(rows)


def _summary(result: IndexedSearchResult, case, target: str, top_k: int) -> dict:
    return {
        "case": case or "(none)",
        "searched for": target,
        "mode": "indexed (no video decoded)",
        "faces in the index": result.faces_in_index,
        "nearest faces asked": top_k,
        "faces above threshold": result.hits,
        "top-k saturated": result.saturated,
        "files with sightings": len(result.files),
        "matched faces": len(result.matches),
        "sightings": len(result.sightings),
        "query time": f"{result.query_s * 1000:.0f} ms",
        "wall time": f"{result.wall_s:.2f}s",
    }


def _report(result: IndexedSearchResult, out: Path, summary: dict, as_json: bool) -> None:
    sightings = result.sightings
    link_media(sightings, out)
    write_outputs(out, sightings, result.matches, [])
    report = render_report(out, sightings, summary, [], title="facewatch indexed search")
    if as_json:
        for s in sightings:
            emit_json(s.row())
        return
    table = sightings_table(sightings, "Sightings (from the face index)", with_person=False)
    console.print(table)
    if result.saturated:
        console.print("[yellow]warning:[/] every face returned was a match: raise --top-k")
    console.print(", ".join(f"{k}: {v}" for k, v in summary.items()))
    console.print(f"report: {report.resolve()}")
