"""Investigators' decisions on the sightings and candidates of an archive search.

A search writes its sightings to ``OUT/sightings.parquet``; each has a stable
``sighting_id``. A decision (confirmed, rejected, unsure, with a note) is stored in the
home's catalog (``sighting_reviews``) and written to the audit log *before* it is stored:
a decision that cannot be audited is not taken. The precision the summary and report show
is measured from these decisions, per tier, with its Wilson interval; undecided rows are
counted, never guessed.

The terminal review (``facewatch sightings review``) and the web workspace (``serve``)
share this, so it lives in the Ray-free core; ``jobs.archive.review`` re-renders a search's report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipelines.catalog import utcnow
from pipelines.errors import FacewatchError
from pipelines.evaluation.identification import Rate
from pipelines.home import Home
from pipelines.schemas import Sighting
from pipelines.sightings import CANDIDATE, SIGHTING, TIERS

DECISIONS = ("confirmed", "rejected", "unsure")
NOTE_LEN = 1000


class ReviewError(FacewatchError, ValueError):
    """A review cannot go ahead as asked (exit code 2)."""


def load_sightings(out: Path) -> list[Sighting]:
    """The sightings of a search output folder, sightings first, then candidates, each
    ranked by score (the order a reviewer works through them)."""
    path = Path(out) / "sightings.parquet"
    if not path.is_file():
        raise ReviewError(f"{out}: no sightings.parquet here; give a search's --out folder")
    rows = pq.read_table(path).to_pylist()
    known = set(Sighting.__dataclass_fields__)
    sightings = [Sighting(**{k: v for k, v in r.items() if k in known}) for r in rows]
    if any(not s.sighting_id for s in sightings):
        raise ReviewError(f"{out}: made by an older facewatch (no sighting ids); search again")
    return rank(sightings)


def rank(sightings: list[Sighting]) -> list[Sighting]:
    order = {SIGHTING: 0, CANDIDATE: 1}
    return sorted(sightings, key=lambda s: (order.get(s.tier, 2), -s.best_score, s.start_s))


class SightingReviews:
    def __init__(self, home: Home):
        self.home = home
        self.catalog = home.catalog

    def decisions(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.catalog.rows(
            f"SELECT * FROM sighting_reviews WHERE sighting_id IN ({marks})", *ids
        )
        return {r["sighting_id"]: r for r in rows}

    def decide(
        self, s: Sighting, out: Path, case: str, decision: str, note: str, actor: str
    ) -> dict[str, Any]:
        if decision not in DECISIONS:
            raise ReviewError(f"a decision is one of {', '.join(DECISIONS)}, not {decision!r}")
        if len(note) > NOTE_LEN or not note.isprintable():
            raise ReviewError(f"a note is printable text of at most {NOTE_LEN} characters")
        row = {
            "sighting_id": s.sighting_id,
            "case_ref": case,
            "out_dir": str(Path(out).resolve()),
            "person_id": s.person_id,
            "person_name": s.person_name,
            "tier": s.tier,
            "source_path": s.source_path,
            "start_s": s.start_s,
            "end_s": s.end_s,
            "best_score": s.best_score,
            "decision": decision,
            "note": note,
            "decided_by": actor,
            "decided_at": utcnow(),
        }
        # audited first: a decision that cannot be recorded in the audit log is not taken
        self.home.audit.append(
            actor,
            "sighting.review",
            case=case,
            sighting_id=s.sighting_id,
            person_id=s.person_id,
            tier=s.tier,
            source_path=s.source_path,
            start_s=s.start_s,
            end_s=s.end_s,
            decision=decision,
            note=note,
        )
        cols = ",".join(row)
        self.catalog.db.execute(
            f"INSERT OR REPLACE INTO sighting_reviews({cols}) VALUES ({','.join('?' * len(row))})",
            tuple(row.values()),
        )
        return row


def precision(
    sightings: list[Sighting], decisions: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per tier: how many were confirmed, rejected, unsure and undecided, and precision
    (confirmed over confirmed + rejected) with its Wilson 95% interval."""
    out: dict[str, dict[str, Any]] = {}
    for tier in TIERS:
        mine = [s for s in sightings if s.tier == tier]
        said = [decisions[s.sighting_id]["decision"] for s in mine if s.sighting_id in decisions]
        counts = {d: said.count(d) for d in DECISIONS}
        rate = Rate(counts["confirmed"], counts["confirmed"] + counts["rejected"])
        out[tier] = {
            "total": len(mine),
            **counts,
            "undecided": len(mine) - len(said),
            "precision": rate.value,
            "precision_ci95": list(rate.interval) if rate.n else None,
        }
    return out
