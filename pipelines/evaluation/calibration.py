"""Calibrate a watch list's two thresholds on non-mated faces: measured, not guessed.

The **alert** threshold is set for a target FPIR (false alerts per passer-by, default 1e-3);
the **review** threshold, for a target false-candidate rate (default 1e-2), is the lower
operating point of retrospective work, where a person reviews every candidate.

Every usable face of the distractor images (the largest face per image, through the
production pipeline) is searched against the list as it is now. The threshold is the lowest
at which at most ``floor(target * n)`` of them alarm (``identification.threshold_for_fpir``).
Faces with no detection or rejected by a gate are never searched live either, so they are
left out of n and reported. The record kept beside the threshold says what was measured:
n, false alarms, the FPIR achieved with its Wilson interval, the list size and version,
the embedder and the date, and an FPIR-versus-threshold curve from which the expected FPIR
of any other threshold (an override) is read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipelines.evaluation import identification as ident
from pipelines.evaluation.faces import ImageFaces
from pipelines.evaluation.watchlist import EvaluationInputError, unusable_counts
from pipelines.match import Gallery, Matcher
from pipelines.schemas import CalibrationRecord, FpirMeasurement, ReviewTierRecord

CURVE_POINTS = 40
TAIL_K = 10  # per-person offset: mean of a person's top-k scores over the cohort faces


def normalised_name(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


def check_disjoint(people: list[str], distractor_ids: list[str]) -> None:
    """Refuse distractor folders named like someone on the list (``Jane_Doe`` = ``jane doe``)."""
    listed = {normalised_name(p) for p in people}
    both = sorted({d for d in distractor_ids if normalised_name(d) in listed})
    if both:
        raise EvaluationInputError(
            f"distractor identities {both[:5]} are on the list; calibration needs faces of "
            "people who are not. Remove those folders."
        )


def fpir_curve(nonmated: np.ndarray, points: int = CURVE_POINTS) -> list[list[float]]:
    """[[threshold, FPIR], ...] from FPIR 1/n to 1, log-spaced."""
    n = len(nonmated)
    out = []
    for target in np.logspace(-math.log10(n), 0, points):
        t = ident.threshold_for_fpir(nonmated, float(target))
        if math.isfinite(t):
            out.append([t, float(np.mean(nonmated >= t))])
    return [list(p) for p in sorted({(round(t, 6), f) for t, f in out})]


DEFAULT_CANDIDATE_RATE = 1e-2


def _check(
    gallery: Gallery, target_fpir: float, n: int, what: str, candidate_rate: float | None = None
) -> None:
    if not 0 < target_fpir < 1:
        raise EvaluationInputError(f"target FPIR must be between 0 and 1, got {target_fpir}")
    if candidate_rate is not None and not target_fpir <= candidate_rate < 1:
        raise EvaluationInputError(
            f"the target candidate rate ({candidate_rate:g}) must lie between the target "
            f"FPIR ({target_fpir:g}) and 1: the review tier is the lower threshold, so it "
            "lets more faces through than the alert tier"
        )
    if len(gallery) == 0:
        raise EvaluationInputError("the list has no active people to calibrate")
    needed = math.ceil(1 / target_fpir - 1e-9)
    if n < needed:
        raise EvaluationInputError(
            f"a target FPIR of {target_fpir:g} needs at least {needed} usable non-mated "
            f"faces {what}; the distractors gave {n}. Add more images, or aim higher."
        )


def review_record(shifted: np.ndarray, candidate_rate: float) -> ReviewTierRecord:
    """The review tier measured on the same non-mated scores as the alert tier."""
    threshold = ident.threshold_for_fpir(shifted, candidate_rate)
    achieved = ident.Rate(int((shifted >= threshold).sum()), len(shifted))
    return {
        "threshold": threshold,
        "target_candidate_rate": candidate_rate,
        "false_alarms": achieved.k,
        "rate": achieved.value,
        "rate_ci95": list(achieved.interval),
    }


def calibrate(
    gallery: Gallery,
    faces: ImageFaces,
    target_fpir: float,
    distractors: Path | str,
    candidate_rate: float = DEFAULT_CANDIDATE_RATE,
) -> CalibrationRecord:
    """The calibration record for ``gallery`` measured on ``faces`` (non-mated): the alert
    threshold for ``target_fpir`` and the review threshold for ``candidate_rate``."""
    usable = faces.usable()
    n = int(usable.sum())
    _check(gallery, target_fpir, n, "to be measured", candidate_rate)
    scores = Matcher(gallery).person_scores(faces.embeddings[usable], gallery.embedder)
    nonmated = scores.max(axis=1).astype(np.float64)
    threshold = ident.threshold_for_fpir(nonmated, target_fpir)
    achieved = ident.Rate(int((nonmated >= threshold).sum()), n)
    return {
        "mode": "list",
        "threshold": threshold,
        **_measured(achieved, target_fpir, gallery, faces, distractors),
        "review": review_record(nonmated, candidate_rate),
        "curve": fpir_curve(nonmated),
    }


def _measured(
    achieved: ident.Rate,
    target_fpir: float,
    gallery: Gallery,
    faces: ImageFaces,
    distractors: Path | str,
) -> FpirMeasurement:
    no_face, rejected = unusable_counts(faces)
    return {
        "target_fpir": target_fpir,
        "n_nonmated": achieved.n,
        "false_alarms": achieved.k,
        "fpir": achieved.value,
        "fpir_ci95": list(achieved.interval),
        "list_size": len(gallery.people),
        "embedder": gallery.embedder.key,
        "distractors": str(distractors),
        "images": len(faces),
        "no_face": no_face,
        "rejected": rejected,
    }


def calibrate_per_person(
    gallery: Gallery,
    faces: ImageFaces,
    identities: list[str],
    target_fpir: float,
    distractors: Path | str,
    candidate_rate: float = DEFAULT_CANDIDATE_RATE,
) -> CalibrationRecord:
    """Per-person thresholds that tame "lambs" (people many strangers resemble).

    The distractor identities are split in two halves. On the cohort half, each person's
    offset is the mean of their ``TAIL_K`` highest scores; on the other half, one shift z is
    set for the target FPIR on ``score - offset``. Person p's threshold is ``offset_p + z``,
    so a face alarms on p when ``score - offset_p >= z``, and the FPIR is measured on faces
    the offsets never saw. benchmarks/bench_accuracy.py measures what this gains.
    """
    usable = faces.usable()
    names = sorted(set(identities))
    half = {name: i % 2 for i, name in enumerate(names)}
    side = np.array([half[i] for i in identities])
    cohort_rows, measure_rows = usable & (side == 0), usable & (side == 1)
    _check(gallery, target_fpir, int(measure_rows.sum()), "in the measuring half", candidate_rate)
    if cohort_rows.sum() < TAIL_K:
        raise EvaluationInputError(
            f"per-person calibration needs at least {TAIL_K} usable cohort faces; got "
            f"{int(cohort_rows.sum())}"
        )
    matcher = Matcher(gallery)
    scores = matcher.person_scores(faces.embeddings, gallery.embedder).astype(np.float64)
    offset = np.sort(scores[cohort_rows], axis=0)[-TAIL_K:].mean(axis=0)
    shifted = (scores[measure_rows] - offset).max(axis=1)
    z = ident.threshold_for_fpir(shifted, target_fpir)
    achieved = ident.Rate(int((shifted >= z).sum()), len(shifted))
    person = offset + z
    centre = float(np.median(offset))
    review = review_record(shifted, candidate_rate)
    review["person_thresholds"] = dict(
        zip(matcher.person_ids, map(float, offset + review["threshold"]), strict=True)
    )
    review["threshold"] = float(np.median(offset + review["threshold"]))
    return {
        "mode": "per-person",
        "threshold": float(np.median(person)),
        "shift": z,
        "tail_k": TAIL_K,
        "n_cohort": int(cohort_rows.sum()),
        "person_thresholds": dict(zip(matcher.person_ids, map(float, person), strict=True)),
        **_measured(achieved, target_fpir, gallery, faces, distractors),
        "review": review,
        "curve": [[t + centre, f] for t, f in fpir_curve(shifted)],
    }
