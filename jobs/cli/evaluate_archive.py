"""``facewatch evaluate archive``: the archive search a user runs, scored against truth.

The search is the real one (same setup, audit record, Ray Data job, outputs in ``--out``);
only its sightings are then compared with the truth file (pipelines/evaluation/archive.py)
and the scores written to ``OUT/evaluation.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from jobs.archive import runtime
from jobs.archive.search_setup import SearchSetup, check_numbers
from jobs.cli.common import console, current_actor, fail, get_context, json_stdout
from jobs.cli.search import report_outputs, run_with_progress
from pipelines.evaluation.archive import Appearance, Found, score


def run_evaluation(
    ctx: typer.Context,
    video: Path,
    truth: Path,
    appearances: list[Appearance],
    list_name: str,
    out: Path,
    fps: float | None,
    thresholds: tuple[float | None, float | None],
    case: str,
    ray_address: str | None,
    as_json: bool,
) -> dict:
    runtime.prepare_env(local=ray_address is None)
    settings = get_context(ctx).settings()
    threshold, review_threshold = thresholds
    check_numbers(fps, threshold)
    check_numbers(threshold=review_threshold)
    setup = SearchSetup.prepare(
        settings,
        [video],
        list_name,
        [],
        threshold,
        case,
        f"accuracy evaluation against ground truth {truth.name}",
        current_actor(),
        warn=lambda msg: console.print(f"[yellow]warning:[/] {msg}"),
        review_threshold=review_threshold,
    )
    try:
        with json_stdout(as_json):
            result = run_with_progress(setup, out, fps, ray_address, quiet=as_json)
    finally:
        setup.close()
    with json_stdout(as_json):  # the search's own table goes to stderr with --json
        report_outputs(setup, result, out, as_json=False)
    if result.errors:
        fail(f"{video} could not be searched in full: {result.errors[0].reason}", code=1)
    found = [Found(s.person_name, s.start_s, s.end_s, s.tier) for s in result.sightings]
    numbers = setup.numbers(result)
    metrics = {
        "video": str(video),
        "truth": str(truth),
        "list": list_name,
        "thresholds": numbers["thresholds"],
        "review_thresholds": numbers["review_thresholds"],
        **score(appearances, found),
    }
    (out / "evaluation.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    return metrics
