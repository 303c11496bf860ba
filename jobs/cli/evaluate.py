"""``facewatch evaluate``: measure the engine's recognition accuracy on labelled data.

One sub-app for every evaluation, so each runs the configured engine the same way and
reports the same way (a table on stderr, or one JSON object on stdout with ``--json``).
``evaluate lfw`` runs LFW's View 2 verification protocol (see pipelines/evaluation/lfw.py).
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobs.archive.runtime import local_engine
from jobs.cli.common import console, fail, get_context
from jobs.cli.options import (
    BatchSizeOpt,
    FpsOpt,
    JsonObjectOpt,
    OutOpt,
    RayAddressOpt,
    ReviewThresholdOpt,
    ThresholdOpt,
    identity_dir,
)
from pipelines.config import DlibResnetConfig, FacenetConfig, Settings
from pipelines.embedders.base import WeightsError
from pipelines.evaluation import lfw
from pipelines.images import ImageError

app = typer.Typer(
    help="Measure recognition accuracy on labelled data.",
    no_args_is_help=True,
)


class EmbedderName(str, Enum):
    dlib_resnet = "dlib-resnet"
    facenet_vggface2 = "facenet-vggface2"


def with_embedder(settings: Settings, name: EmbedderName | None) -> Settings:
    """The settings, with the embedder switched to ``name`` (configured options kept if same)."""
    if name is None or name.value == settings.embedder.type:
        return settings
    config = DlibResnetConfig() if name is EmbedderName.dlib_resnet else FacenetConfig()
    return settings.model_copy(update={"embedder": config})


def parse_folds(text: str | None) -> list[int] | None:
    """``"1,3"`` -> ``[1, 3]``; None means every fold."""
    if text is None:
        return None
    try:
        folds = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated fold numbers, got {text!r}") from None
    if len(folds) < 2:
        raise typer.BadParameter(
            "the protocol chooses each fold's threshold on the other "
            "folds, so it needs at least two folds"
        )
    return folds


@app.command("lfw")
def evaluate_lfw(
    ctx: typer.Context,
    root: Path = typer.Option(
        ...,
        "--root",
        exists=True,
        file_okay=False,
        help="LFW image folder (<name>/<name>_NNNN.jpg)",
    ),
    pairs: Path = typer.Option(
        ..., "--pairs", exists=True, dir_okay=False, help="View 2 pairs file (pairs.txt)"
    ),
    embedder: EmbedderName | None = typer.Option(
        None, "--embedder", help="embedder to evaluate (default: the configured one)"
    ),
    folds: str | None = typer.Option(None, "--folds", help="folds to use, e.g. 1,2 (default: all)"),
    limit_pairs: int | None = typer.Option(
        None, "--limit-pairs", min=2, help="at most N pairs per fold, half matched, half not"
    ),
    batch_size: BatchSizeOpt = 32,
    as_json: JsonObjectOpt = False,
) -> None:
    """LFW View 2 verification through the full pipeline: per-fold accuracy, mean +- std."""
    settings = with_embedder(get_context(ctx).settings(), embedder)
    try:
        chosen = lfw.select_pairs(lfw.parse_pairs(pairs), parse_folds(folds), limit_pairs)
        engine = local_engine(settings)
        engine.load(warmup=False)
        report = _run(engine, root, chosen, batch_size, quiet=as_json)
    except (lfw.PairsFormatError, WeightsError, ImageError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(_json_report(report, root, pairs)) + "\n")
    else:
        _print_report(report)


def _bar(quiet: bool) -> Progress:
    """A progress bar per task (images, pairs), silent with --json."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )


def _run(engine, root: Path, pairs: list[lfw.Pair], batch_size: int, quiet: bool):
    bar = _bar(quiet)
    tasks: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(f"{stage} images", total=total)
        bar.update(tasks[stage], completed=done)

    with bar:
        return lfw.run_lfw(engine, root, pairs, batch_size, progress)


def _json_report(report: lfw.LfwReport, root: Path, pairs: Path) -> dict[str, Any]:
    out = report.to_dict()
    out.update(
        protocol="LFW View 2: per-fold threshold chosen on the other folds; std over folds",
        root=str(root),
        pairs_file=str(pairs),
    )
    return out


def _print_report(report: lfw.LfwReport) -> None:
    table = Table(title=f"LFW View 2 - {report.embedder}")
    for col in ("fold", "pairs", "threshold", "accuracy"):
        table.add_column(col, justify="right")
    for f in report.folds:
        table.add_row(str(f.fold), str(f.n_pairs), f"{f.threshold:.4f}", f"{f.accuracy:.2%}")
    table.add_section()
    table.add_row(
        "mean", str(report.n_pairs), f"{report.threshold:.4f}",
        f"{report.mean_accuracy:.2%} ± {report.std:.2%}",
    )  # fmt: skip
    console.print(table)
    console.print(
        f"images: {report.n_images}, no face found (centre fallback): {report.no_face}; "
        f"threshold on all pairs: {report.threshold:.4f}; {report.seconds:.0f}s"
    )
    if report.would_reject:
        counts = ", ".join(f"{k} {v}" for k, v in report.would_reject.items())
        console.print(f"quality gates would reject (not applied here): {counts}")


# ---------------------------------------------------------------------------- watchlist


def parse_sizes(text: str | None) -> list[int]:
    """``"10,100"`` -> ``[10, 100]``."""
    if not text:
        return []
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated list sizes, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise typer.BadParameter("list sizes must be positive")
    return sizes


@app.command("watchlist")
def evaluate_watchlist(
    ctx: typer.Context,
    gallery: Path = identity_dir("--gallery", "DIR/<identity>/<images> to enrol"),
    distractors: Path = identity_dir(
        "--distractors", "DIR/<identity>/<images> of people not in the gallery (non-mated probes)"
    ),
    enroll_per_id: int = typer.Option(
        1, "--enroll-per-id", min=1, max=100, help="usable images enrolled per identity"
    ),
    list_sizes: str | None = typer.Option(
        None, "--list-sizes", help="random sub-list sizes, e.g. 10,100,1000"
    ),
    seeds: int = typer.Option(5, "--seeds", min=1, max=100, help="sub-lists drawn per size"),
    groups: Path | None = typer.Option(
        None, "--groups", exists=True, dir_okay=False, help="CSV identity,group"
    ),
    embedder: EmbedderName | None = typer.Option(
        None, "--embedder", help="embedder to evaluate (default: the configured one)"
    ),
    out: Path | None = typer.Option(
        None, "--out", file_okay=False, help="write metrics.json, det.png, CSV, report.html"
    ),
    batch_size: BatchSizeOpt = 32,
    as_json: JsonObjectOpt = False,
) -> None:
    """1:N watch-list accuracy: TPIR at FPIR 1e-2/1e-3/2e-4, FPIR at the default threshold."""
    from pipelines.evaluation import outputs
    from pipelines.evaluation import watchlist as wl

    sizes = parse_sizes(list_sizes)
    settings = with_embedder(get_context(ctx).settings(), embedder)
    try:
        plan = wl.plan(gallery, distractors)
        group_map = (
            wl.read_groups(groups, set(plan.gallery) | set(plan.distractors)) if groups else None
        )
        ev = _evaluate_plan(settings, plan, enroll_per_id, batch_size, quiet=as_json)
        metrics = wl.report(ev, sizes, group_map, seeds)
        written = outputs.write_outputs(metrics, out) if out else {}
    except (wl.EvaluationInputError, WeightsError, ImageError, ValueError, OSError) as exc:
        fail(str(exc))
    if as_json:
        slim = {k: v for k, v in metrics.items() if k != "det"}
        sys.stdout.write(json.dumps({**slim, "outputs": written}) + "\n")
    else:
        _print_watchlist(metrics, written)


def _evaluate_plan(settings, plan, enroll_per_id: int, batch_size: int, quiet: bool):
    """The engine's faces of every planned image, enrolled and searched (``wl.evaluate``)."""
    from pipelines.evaluation import watchlist as wl
    from pipelines.evaluation.faces import photo_embeddings

    engine = local_engine(settings)
    engine.load(warmup=False)
    gallery_faces, distractor_faces = _extract_sets(engine, plan, batch_size, quiet=quiet)
    default = engine.embedder.default_threshold
    return wl.evaluate(
        plan,
        gallery_faces,
        distractor_faces,
        engine.info,
        default,
        enroll_per_id,
        lambda f, rows: photo_embeddings(f, rows, engine),
    )


def _extract_sets(engine, plan, batch_size: int, quiet: bool):
    """Each image through the pipeline once, with one progress bar per set."""
    from pipelines.evaluation.faces import extract_faces

    bar = _bar(quiet)
    sets = {"gallery": plan.gallery_paths, "distractors": plan.distractor_paths}
    out = []
    with bar:
        for name, paths in sets.items():
            task = bar.add_task(f"{name} images", total=len(paths))

            def progress(_stage: str, done: int, _total: int, task=task) -> None:
                bar.update(task, completed=done)

            out.append(
                extract_faces(
                    engine.detector, engine.embedder, engine.gate, paths, batch_size, progress
                )
            )
    gallery, distractors = out
    return gallery, distractors


def _print_watchlist(m: dict[str, Any], written: dict[str, str]) -> None:
    from pipelines.evaluation.outputs import group_rows, operating_rows, pct, ratio_text

    table = Table(title=f"watch-list identification - {m['embedder']}")
    for col in ("operating point", "threshold", "TPIR [95% CI]", "FPIR [95% CI]", "note"):
        table.add_column(col)
    for row in operating_rows(m):
        table.add_row(*row)
    console.print(table)
    console.print(
        f"{m['n_mated']} mated, {m['n_nonmated']} non-mated searches; "
        f"{m['enrolled_people']} people enrolled ({m['enrolled_images']} images, "
        f"{m['enrol_skipped']} unusable skipped, not enrolled: {len(m['not_enrolled'])}); "
        f"no face {m['no_face']}; rejected by gates {m['rejected']} (misses / non-alarms)"
    )
    if m.get("list_sizes"):
        t = Table(title="list size (FPIR and TPIR at the default threshold)")
        for col in ("people", "sub-lists", "FPIR (min-max)", "TPIR", "threshold for FPIR 1e-3"):
            t.add_column(col, justify="right")
        for r in m["list_sizes"]:
            if "skipped" in r:
                t.add_row(str(r["list_size"]), "-", f"skipped: {r['skipped']}", "", "")
                continue
            t.add_row(
                str(r["list_size"]),
                str(r["sub_lists"]),
                f"{pct(r['fpir_at_threshold'], 3)} ({pct(r['fpir_min'], 3)}-"
                f"{pct(r['fpir_max'], 3)})",
                pct(r["tpir_at_threshold"]),
                f"{r['threshold_for_target']:.4f}",
            )
        console.print(t)
    for name, g in (m.get("per_group") or {}).items():
        t = Table(title=f"per group at {name} threshold {g['threshold']:.4f}")
        for col in ("group", "TPIR", "FPIR", "samples"):
            t.add_column(col)
        for row in group_rows(g):
            t.add_row(*row)
        console.print(t)
        console.print(
            f"worst/best FNIR: {ratio_text(g['fnir_ratio'])}; "
            f"worst/best FPIR: {ratio_text(g['fpir_ratio'])}"
        )
    for kind, path in written.items():
        console.print(f"wrote {kind}: {path}")


# ------------------------------------------------------------------------------ archive


@app.command("archive")
def evaluate_archive(
    ctx: typer.Context,
    video: Path = typer.Argument(..., exists=True, dir_okay=False, help="a video to search"),
    truth: Path = typer.Option(
        ..., "--truth", exists=True, dir_okay=False, help="ground truth JSON (docs: Accuracy)"
    ),
    list_name: str = typer.Option(..., "--list", help="the watch list to search for"),
    out: OutOpt = Path("facewatch-evaluation"),
    fps: FpsOpt = None,
    threshold: ThresholdOpt = None,
    review_threshold: ReviewThresholdOpt = None,
    case: str = typer.Option("EVALUATION", "--case", help="case reference for the audit log"),
    ray_address: RayAddressOpt = None,
    as_json: JsonObjectOpt = False,
) -> None:
    """Search a ground-truth video as a user would and score it: recall and precision of
    sightings, recall with candidates, false candidates per non-listed appearance."""
    from jobs.cli.evaluate_archive import run_evaluation
    from pipelines.evaluation.archive import load_truth

    appearances = load_truth(truth)
    metrics = run_evaluation(
        ctx, video, truth, appearances, list_name, out, fps, (threshold, review_threshold),
        case, ray_address, as_json,
    )  # fmt: skip
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
        return
    _print_archive(metrics)


def _print_archive(m: dict) -> None:
    def pct(rate: dict | None) -> str:
        if not rate or rate["rate"] is None:
            return "-"
        low, high = rate["ci95"]
        return f"{rate['rate']:.1%} [{low:.1%}, {high:.1%}] ({rate['k']}/{rate['n']})"

    table = Table(title="archive search against ground truth", show_header=False)
    table.add_row("recall, sightings (alert tier)", pct(m["recall_sightings"]))
    table.add_row("recall, sightings + candidates", pct(m["recall_with_candidates"]))
    table.add_row("precision, sightings", pct(m["precision_sightings"]))
    table.add_row("false sightings", str(m["false_sightings"]))
    fc = m["false_candidates_per_distractor"]
    table.add_row(
        "false candidates per non-listed appearance",
        f"{m['false_candidates']}/{m['distractor_appearances']}"
        + (f" ({fc['rate']:.1%})" if fc else ""),
    )
    console.print(table)
    for miss in m["missed"]:
        console.print(f"missed: {miss['person']} at {miss['start_s']:.1f}-{miss['end_s']:.1f}s")
