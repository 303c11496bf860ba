"""Score an archive search against ground truth: who really was on screen when.

Truth file (JSON), one object:

    {"appearances": [
        {"person": "Jane Doe", "start_s": 12.0, "end_s": 15.5, "label": "wanted"},
        {"person": "someone", "start_s": 20.0, "end_s": 23.0, "label": "distractor"},
        ...]}

- ``person``: for a wanted appearance, the name the person is enrolled under on the list
  searched; for a distractor (someone not on the list), any label.
- ``label``: ``wanted`` or ``distractor``. Other keys are kept but not read.

An appearance counts as found when a sighting of the same person overlaps it in time, with
``slack_s`` (default 1 s) of tolerance either side for frame sampling. A sighting or
candidate that overlaps no wanted appearance of its person is false. Rates are given with
their Wilson 95% intervals:

- recall of sightings (alert tier), and of sightings plus candidates (both tiers);
- precision of sightings;
- false candidates per non-listed appearance (distractors), the review tier's cost.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import FacewatchError
from pipelines.evaluation.identification import Rate

WANTED, DISTRACTOR = "wanted", "distractor"


class TruthError(FacewatchError, ValueError):
    """A truth file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Appearance:
    person: str
    start_s: float
    end_s: float
    wanted: bool


@dataclass(frozen=True)
class Found:
    person: str
    start_s: float
    end_s: float
    tier: str  # "sighting" or "candidate"


def load_truth(path: Path | str) -> list[Appearance]:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TruthError(f"{path}: not a readable JSON truth file ({exc})") from None
    rows = doc.get("appearances") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows:
        raise TruthError(f"{path}: needs a non-empty list 'appearances'")
    out = []
    for i, row in enumerate(rows):
        out.append(_appearance(path, i, row))
    if not any(a.wanted for a in out):
        raise TruthError(f"{path}: no appearance is labelled 'wanted'")
    return out


def _appearance(path: Path, i: int, row: object) -> Appearance:
    where = f"{path}: appearances[{i}]"
    if not isinstance(row, dict):
        raise TruthError(f"{where} is not an object")
    person, label = row.get("person"), row.get("label")
    start, end = row.get("start_s"), row.get("end_s")
    if not isinstance(person, str) or not person:
        raise TruthError(f"{where}: 'person' must be a non-empty string")
    if label not in (WANTED, DISTRACTOR):
        raise TruthError(f"{where}: 'label' must be 'wanted' or 'distractor', not {label!r}")
    if not (isinstance(start, int | float) and isinstance(end, int | float)) or not all(
        math.isfinite(x) for x in (start, end)
    ):
        raise TruthError(f"{where}: 'start_s' and 'end_s' must be numbers of seconds")
    if not 0 <= start <= end:
        raise TruthError(f"{where}: needs 0 <= start_s <= end_s, got {start}-{end}")
    return Appearance(person, float(start), float(end), label == WANTED)


def _overlaps(a: Appearance, f: Found, slack_s: float) -> bool:
    return (
        a.person == f.person and a.start_s - slack_s <= f.end_s and f.start_s - slack_s <= a.end_s
    )


def score(truth: list[Appearance], found: list[Found], slack_s: float = 1.0) -> dict[str, Any]:
    """Recall, precision and false candidates of ``found`` against ``truth``."""
    wanted = [a for a in truth if a.wanted]
    n_distractors = sum(not a.wanted for a in truth)
    sightings = [f for f in found if f.tier == "sighting"]
    candidates = [f for f in found if f.tier == "candidate"]

    def hits(items: list[Found]) -> int:
        return sum(any(_overlaps(a, f, slack_s) for f in items) for a in wanted)

    def correct(items: list[Found]) -> int:
        return sum(any(_overlaps(a, f, slack_s) for a in wanted) for f in items)

    false_candidates = len(candidates) - correct(candidates)
    return {
        "wanted_appearances": len(wanted),
        "distractor_appearances": n_distractors,
        "sightings": len(sightings),
        "candidates": len(candidates),
        "recall_sightings": Rate(hits(sightings), len(wanted)).to_dict(),
        "recall_with_candidates": Rate(hits(found), len(wanted)).to_dict(),
        "precision_sightings": Rate(correct(sightings), len(sightings)).to_dict(),
        "false_sightings": len(sightings) - correct(sightings),
        "false_candidates": false_candidates,
        # per non-listed appearance: the review tier's cost to an investigator
        "false_candidates_per_distractor": Rate(
            min(false_candidates, n_distractors), n_distractors
        ).to_dict()
        if n_distractors
        else None,
        "missed": [
            {"person": a.person, "start_s": a.start_s, "end_s": a.end_s}
            for a in wanted
            if not any(_overlaps(a, f, slack_s) for f in found)
        ],
    }
