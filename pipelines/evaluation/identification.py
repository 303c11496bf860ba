"""1:N identification metrics for watch lists (open-set, as in NIST FRVT / ISO 19795-1).

Scores are similarities: higher means more alike; a search alarms on an entry when the
score is ``>= threshold``.

- A mated search (the probe's person is on the list) is a true hit at threshold t when the
  rank-1 person is the right one and the rank-1 score is >= t. TPIR(t) is the fraction of
  mated searches that are true hits; FNIR = 1 - TPIR.
- A non-mated search (the probe's person is not on the list) is a false alarm at t when any
  entry scores >= t, i.e. its best score is >= t. FPIR(t) is the fraction that alarm.
- A probe with no face, or whose face a quality gate rejects, is still a search: its score
  is -inf, so it is a miss (mated) or a non-alarm (non-mated). Callers count them separately.

Every rate carries a Wilson 95% score interval. The threshold for a target FPIR is the
lowest that lets at most ``floor(target * n)`` non-mated searches alarm; when that is zero
(``target * n < 1``) the data cannot show the target and the point is marked unresolved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054
TARGET_FPIRS = (1e-2, 1e-3, 2e-4)
MIN_EXPECTED_ERRORS = 5  # a group rate with fewer expected errors than this is noise


def target_key(target: float) -> str:
    """``1e-3`` -> ``"0.001"``: the JSON key of a target FPIR."""
    return repr(float(target))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (``(0, 1)`` when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    """k of n, with its Wilson 95% interval. ``value`` is None when n is 0."""

    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def complement(self) -> Rate:
        return Rate(self.n - self.k, self.n)

    def to_dict(self) -> dict:
        low, high = self.interval
        return {"rate": self.value, "k": self.k, "n": self.n, "ci95": [low, high]}


@dataclass
class Searches:
    """The outcome of every search, ready for thresholds.

    ``mated_correct[i]``: rank 1 of mated search i is the right person (strictly higher
    than every other person); ``mated_score[i]``: its rank-1 score; ``nonmated_score[j]``:
    the best score of non-mated search j. Unusable probes have score -inf.
    """

    mated_correct: np.ndarray  # (n_m,) bool
    mated_score: np.ndarray  # (n_m,) float64
    nonmated_score: np.ndarray  # (n_nm,) float64

    def __post_init__(self) -> None:
        self.mated_correct = np.asarray(self.mated_correct, bool)
        self.mated_score = np.asarray(self.mated_score, np.float64)
        self.nonmated_score = np.asarray(self.nonmated_score, np.float64)
        if self.mated_correct.shape != self.mated_score.shape:
            raise ValueError("mated_correct and mated_score must have the same length")

    @property
    def n_mated(self) -> int:
        return len(self.mated_score)

    @property
    def n_nonmated(self) -> int:
        return len(self.nonmated_score)

    def tpir(self, threshold: float) -> Rate:
        hits = self.mated_correct & (self.mated_score >= threshold)
        return Rate(int(hits.sum()), self.n_mated)

    def fpir(self, threshold: float) -> Rate:
        return Rate(int((self.nonmated_score >= threshold).sum()), self.n_nonmated)

    def rank1(self) -> Rate:
        """Closed-set rank-1 identification rate (no threshold)."""
        return Rate(int(self.mated_correct.sum()), self.n_mated)


def searches_from_scores(
    mated: np.ndarray,
    mated_person: np.ndarray,
    nonmated: np.ndarray,
    mated_usable: np.ndarray | None = None,
    nonmated_usable: np.ndarray | None = None,
) -> Searches:
    """Searches from person-score matrices: mated (n_m, P) with the true column of each row,
    non-mated (n_nm, P). Rows marked unusable score -inf (misses / non-alarms)."""
    mated = np.asarray(mated, np.float64)
    nonmated = np.asarray(nonmated, np.float64)
    person = np.asarray(mated_person, np.int64)
    n_m, p = mated.shape if mated.ndim == 2 else (0, 0)
    if len(person) != n_m or (n_m and (person.min() < 0 or person.max() >= p)):
        raise ValueError("every mated search needs its person's column in the score matrix")
    if n_m and p:
        true = mated[np.arange(n_m), person]
        others = mated.copy()
        others[np.arange(n_m), person] = -np.inf
        correct = true > others.max(axis=1)
        score = mated.max(axis=1)
    else:
        correct, score = np.zeros(n_m, bool), np.full(n_m, -np.inf)
    best = nonmated.max(axis=1) if nonmated.size else np.full(len(nonmated), -np.inf)
    if mated_usable is not None:
        usable = np.asarray(mated_usable, bool)
        correct, score = correct & usable, np.where(usable, score, -np.inf)
    if nonmated_usable is not None:
        best = np.where(np.asarray(nonmated_usable, bool), best, -np.inf)
    return Searches(correct, score, best)


# ---------------------------------------------------------------------------- thresholds


def threshold_for_fpir(nonmated_score: np.ndarray, target: float) -> float:
    """The lowest threshold at which at most ``floor(target * n)`` non-mated searches alarm."""
    s = np.asarray(nonmated_score, np.float64)
    if len(s) == 0:
        raise ValueError("no non-mated searches to set a threshold on")
    if not 0 <= target <= 1:
        raise ValueError(f"target FPIR must be in [0, 1], got {target}")
    allowed = int(math.floor(target * len(s) + 1e-9))
    if allowed >= len(s):
        return -math.inf
    desc = np.sort(s)[::-1]
    return float(np.nextafter(desc[allowed], math.inf))


@dataclass
class OperatingPoint:
    threshold: float
    tpir: Rate
    fpir: Rate
    target_fpir: float | None = None
    resolved: bool = True  # False: too few non-mated searches to show the target FPIR

    def to_dict(self) -> dict:
        out = {
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
            "tpir": self.tpir.to_dict(),
            "fnir": self.tpir.complement().to_dict(),
            "fpir": self.fpir.to_dict(),
        }
        if self.target_fpir is not None:
            out.update(target_fpir=self.target_fpir, resolved=self.resolved)
        return out


def at_threshold(searches: Searches, threshold: float) -> OperatingPoint:
    return OperatingPoint(threshold, searches.tpir(threshold), searches.fpir(threshold))


def at_fpir(searches: Searches, target: float) -> OperatingPoint:
    t = threshold_for_fpir(searches.nonmated_score, target)
    point = at_threshold(searches, t)
    point.target_fpir = target
    point.resolved = target * searches.n_nonmated >= 1 - 1e-9
    return point


def det_curve(searches: Searches, max_points: int = 400) -> dict[str, list[float]]:
    """(threshold, FPIR, FNIR) points from FPIR 1/n up to 1, log-spaced in FPIR plus a
    linear sweep of thresholds, sorted by threshold (descending FPIR)."""
    nm = searches.nonmated_score[np.isfinite(searches.nonmated_score)]
    ms = searches.mated_score[np.isfinite(searches.mated_score)]
    every = np.concatenate([nm, ms])
    if len(every) == 0 or searches.n_nonmated == 0 or searches.n_mated == 0:
        return {"threshold": [], "fpir": [], "fnir": []}
    half = max(2, max_points // 2)
    targets = np.logspace(-math.log10(searches.n_nonmated), 0, half)
    cands = [threshold_for_fpir(searches.nonmated_score, t) for t in targets]
    cands += list(np.linspace(every.min(), every.max(), half))
    ts = np.unique(np.array([c for c in cands if math.isfinite(c)]))
    nm_sorted = np.sort(searches.nonmated_score)
    hit_sorted = np.sort(np.where(searches.mated_correct, searches.mated_score, -np.inf))
    fpir = (searches.n_nonmated - np.searchsorted(nm_sorted, ts, "left")) / searches.n_nonmated
    tpir = (searches.n_mated - np.searchsorted(hit_sorted, ts, "left")) / searches.n_mated
    return {"threshold": ts.tolist(), "fpir": fpir.tolist(), "fnir": (1 - tpir).tolist()}


def summary(
    searches: Searches,
    default_threshold: float | None,
    targets: Sequence[float] = TARGET_FPIRS,
) -> dict:
    """TPIR at each target FPIR with its threshold, and the default threshold's rates."""
    points = {target_key(t): at_fpir(searches, t) for t in targets}
    out = {
        "n_mated": searches.n_mated,
        "n_nonmated": searches.n_nonmated,
        "rank1": searches.rank1().to_dict(),
        "tpir_at_fpir": {k: p.tpir.value for k, p in points.items()},
        "threshold_at_fpir": {
            k: (p.threshold if math.isfinite(p.threshold) else None) for k, p in points.items()
        },
        "operating_points": {k: p.to_dict() for k, p in points.items()},
    }
    if default_threshold is not None:
        point = at_threshold(searches, default_threshold)
        out["default_threshold"] = default_threshold
        out["fpir_at_default"] = point.fpir.value
        out["tpir_at_default"] = point.tpir.value
        out["at_default"] = point.to_dict()
    return out


# ---------------------------------------------------------------------------- score sets


@dataclass
class ScoreSet:
    """Person-score matrices of a whole evaluation, from which sub-lists can be drawn.

    Columns are the enrolled people. ``mated_person[i]`` is the column of mated probe i's
    person. Unusable probes (no face, rejected) have all-(-inf) rows.
    """

    mated: np.ndarray  # (n_m, P)
    mated_person: np.ndarray  # (n_m,) int
    nonmated: np.ndarray  # (n_nm, P)

    @property
    def n_people(self) -> int:
        return self.mated.shape[1] if self.mated.ndim == 2 else self.nonmated.shape[1]

    def searches(self, columns: np.ndarray | None = None) -> Searches:
        """All searches against the whole list, or against the sub-list ``columns``: mated
        probes of people left out are dropped (they are neither mated nor non-mated)."""
        if columns is None:
            return searches_from_scores(self.mated, self.mated_person, self.nonmated)
        columns = np.asarray(columns, np.int64)
        where = np.full(self.n_people, -1, np.int64)
        where[columns] = np.arange(len(columns))
        keep = where[self.mated_person] >= 0
        return searches_from_scores(
            self.mated[keep][:, columns],
            where[self.mated_person[keep]],
            self.nonmated[:, columns],
        )


def cohort_normalise(scores: np.ndarray, cohort: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Per-entry Z-normalisation: ``(score - mean_p) / std_p`` with each person's mean and
    std over a background cohort of non-mated faces (``cohort``: (C, P) scores). People who
    look like many others (lambs) get a high mean and are pulled down."""
    cohort = np.asarray(cohort, np.float64)
    if len(cohort) < 2:
        raise ValueError("a cohort needs at least two faces")
    mu = cohort.mean(axis=0)
    sd = np.maximum(cohort.std(axis=0), floor)
    return (np.asarray(scores, np.float64) - mu) / sd


# ---------------------------------------------------------------------------- list size


def list_size_scaling(
    scores: ScoreSet,
    sizes: Sequence[int],
    threshold: float,
    target_fpir: float = 1e-3,
    seeds: int = 5,
    rng_seed: int = 0,
) -> list[dict]:
    """How FPIR at ``threshold``, TPIR, and the threshold for ``target_fpir`` change with
    the size of the list: per size, ``seeds`` random sub-lists (one when it is the whole
    list). FPIR and TPIR intervals pool the counts over the sub-lists."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for size in sorted(set(int(s) for s in sizes)):
        if size < 1 or size > scores.n_people:
            rows.append({"list_size": size, "skipped": f"the gallery has {scores.n_people} people"})
            continue
        draws = 1 if size == scores.n_people else seeds
        fp, tp, thr = [], [], []
        for _ in range(draws):
            s = scores.searches(rng.choice(scores.n_people, size, replace=False))
            fp.append(s.fpir(threshold))
            tp.append(s.tpir(threshold))
            thr.append(threshold_for_fpir(s.nonmated_score, target_fpir))
        rows.append(_size_row(size, draws, threshold, target_fpir, fp, tp, thr))
    return rows


def _size_row(size, draws, threshold, target, fp: list[Rate], tp: list[Rate], thr) -> dict:
    pooled_fp = Rate(sum(r.k for r in fp), sum(r.n for r in fp))
    pooled_tp = Rate(sum(r.k for r in tp), sum(r.n for r in tp))
    fvals = [r.value for r in fp if r.value is not None]
    return {
        "list_size": size,
        "sub_lists": draws,
        "threshold": threshold,
        "fpir_at_threshold": pooled_fp.value,
        "fpir_ci95": list(pooled_fp.interval),
        "fpir_min": min(fvals),
        "fpir_max": max(fvals),
        "tpir_at_threshold": pooled_tp.value,
        "tpir_ci95": list(pooled_tp.interval),
        "target_fpir": target,
        "threshold_for_target": float(np.mean(thr)),
        "threshold_for_target_min": float(np.min(thr)),
        "threshold_for_target_max": float(np.max(thr)),
    }


# ---------------------------------------------------------------------------- groups


@dataclass
class GroupRate:
    group: str
    tpir: Rate
    fpir: Rate
    too_few_mated: bool
    too_few_nonmated: bool

    def to_dict(self) -> dict:
        return {
            "tpir": self.tpir.to_dict(),
            "fnir": self.tpir.complement().to_dict(),
            "fpir": self.fpir.to_dict(),
            "too_few_mated": self.too_few_mated,
            "too_few_nonmated": self.too_few_nonmated,
        }


def _too_few(rate: Rate, overall: float | None) -> bool:
    """Fewer than MIN_EXPECTED_ERRORS errors expected at the overall rate: noise."""
    return rate.n == 0 or (overall or 0.0) * rate.n < MIN_EXPECTED_ERRORS


def per_group(
    searches: Searches,
    mated_group: Sequence[str],
    nonmated_group: Sequence[str],
    threshold: float,
) -> dict:
    """TPIR and FPIR per group at ``threshold``, and the worst-to-best ratios of the error
    rates (FNIR, FPIR) over groups with enough samples. A group is "too few" for a rate when
    fewer than MIN_EXPECTED_ERRORS errors are expected in it at the overall rate."""
    mg, ng = np.asarray(mated_group, str), np.asarray(nonmated_group, str)
    if len(mg) != searches.n_mated or len(ng) != searches.n_nonmated:
        raise ValueError("every search needs a group")
    hit = searches.mated_correct & (searches.mated_score >= threshold)
    alarm = searches.nonmated_score >= threshold
    tpir_all = searches.tpir(threshold).value if searches.n_mated else None
    fnir_all = None if tpir_all is None else 1 - tpir_all
    fpir_all = searches.fpir(threshold).value
    rates = []
    for g in sorted(set(mg) | set(ng)):
        tp = Rate(int(hit[mg == g].sum()), int((mg == g).sum()))
        fp = Rate(int(alarm[ng == g].sum()), int((ng == g).sum()))
        rates.append(GroupRate(g, tp, fp, _too_few(tp, fnir_all), _too_few(fp, fpir_all)))
    return {
        "threshold": threshold,
        "min_expected_errors": MIN_EXPECTED_ERRORS,
        "groups": {r.group: r.to_dict() for r in rates},
        "fnir_ratio": _ratio({r.group: r.tpir.complement() for r in rates if not r.too_few_mated}),
        "fpir_ratio": _ratio({r.group: r.fpir for r in rates if not r.too_few_nonmated}),
    }


def _ratio(rates: Mapping[str, Rate]) -> dict:
    """Worst (highest error) group over best; None with a note when it cannot be said."""
    values = {g: r.value for g, r in rates.items() if r.value is not None}  # n > 0
    if len(values) < 2:
        return {"ratio": None, "note": "fewer than two groups have enough samples"}
    worst = max(values, key=values.__getitem__)
    best = min(values, key=values.__getitem__)
    if values[best] == 0:
        return {
            "ratio": None,
            "worst": worst,
            "best": best,
            "note": f"group {best!r} has no errors: the ratio is unbounded",
        }
    return {"ratio": values[worst] / values[best], "worst": worst, "best": best}


def as_jsonable(obj: Any) -> Any:
    """Dataclasses and numpy values to plain JSON types, non-finite floats to None."""
    if hasattr(obj, "to_dict"):
        return as_jsonable(obj.to_dict())
    if hasattr(obj, "__dataclass_fields__"):
        return as_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): as_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
