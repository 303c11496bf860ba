"""A search's outputs after review: its summary and report re-rendered with the decisions.

The decisions themselves (stored, audited, counted) are ``pipelines.sighting_reviews``,
shared with the web workspace; this adds what only the CLI does: rewrite ``summary.json``
and ``report.html`` in the search's output folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from jobs.archive.report import render_report
from pipelines.schemas import Sighting
from pipelines.sighting_reviews import (
    DECISIONS,
    ReviewError,
    SightingReviews,
    load_sightings,
    precision,
    rank,
)

__all__ = [
    "DECISIONS",
    "ReviewError",
    "SightingReviews",
    "load_sightings",
    "precision",
    "rank",
    "refresh_outputs",
]


def refresh_outputs(out: Path, sightings: list[Sighting], decisions: dict[str, dict]) -> dict:
    """Write the decisions into summary.json ("review") and re-render report.html."""
    out = Path(out)
    path = out / "summary.json"
    numbers = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    numbers["review"] = precision(sightings, decisions)
    path.write_text(json.dumps(numbers, indent=1, default=str) + "\n", encoding="utf-8")
    errors_path = out / "errors.parquet"
    errors = pq.read_table(errors_path).to_pylist() if errors_path.is_file() else []
    facts = {k: v for k, v in numbers.items() if k != "review"}
    render_report(out, sightings, facts, errors, decisions=decisions, review=numbers["review"])
    return numbers["review"]
