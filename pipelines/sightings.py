"""From matched faces to sightings: who, in which file, from when to when.

A track's identity is decided over the whole track, not frame by frame: for each candidate
person, the track's margin is the mean of that person's best ``top_n`` margins (score minus
alert threshold) over the track's faces. The best person wins the track. So one frame's
spurious match cannot flip a track, and a single lucky frame among many poor ones is not
enough to call a match.

The track's best frame alone decides when the track is steadily close to that person (over
at least ``STEADY_MIN_FACES`` faces): its
margin is then ``min(best, median + review_gap)`` when that is higher than the mean of the
best ``top_n``. A still or slow face whose scores hover at the threshold (the faces the
naive every-frame loop alerts on) is found on its best frame, while one lucky frame among
faces that score clearly below the review threshold still cannot make a sighting. Measured
(benchmarks/results/bench_archive.json, docs/accuracy.md): on four ground-truth videos 187
of 246 visits as sightings against 177 for the mean of 3 alone, no false sighting either
way; on photo stand-in tracks fewer false sightings than the best frame alone. Without a
review tier (live) the rule is the mean of the best ``top_n`` alone.

Two tiers: a track whose margin is >= 0 is a **sighting** (the alert tier); one whose margin
is below 0 but at or above ``-review_gap`` of its person (the review threshold) is a
**candidate**, a lead for a person to review. Matched tracks of the same person in the same
file, less than ``link_gap_s`` apart, form one sighting; the group is a sighting when any
of its tracks is.

Monotonic by construction: tracks never depend on a threshold, and lowering every threshold
by the same amount raises every margin by that amount without changing which person is
best, so whatever is found at one threshold is found, as the same person, at every lower
one (tests/pipelines/test_tiers.py checks it on random scenes over 15 thresholds; a test on
the ground-truth fixture video checks that a lower override loses nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FaceTable:
    """All faces of one source, in time order, with their top-k candidates."""

    t: np.ndarray  # (N,) seconds
    frame_index: np.ndarray  # (N,)
    face_index: np.ndarray  # (N,) index of the face within its frame
    boxes: np.ndarray  # (N, 4)
    passed: np.ndarray  # (N,) bool, passed the quality gates (has an embedding)
    quality: np.ndarray  # (N,) quality score, higher is better
    cand_person: np.ndarray  # (N, k) int, index into the matcher's people, -1 for none
    cand_score: np.ndarray  # (N, k) float
    cand_margin: np.ndarray  # (N, k) float

    def __len__(self) -> int:
        return len(self.t)


SIGHTING, CANDIDATE = "sighting", "candidate"
TIERS = (SIGHTING, CANDIDATE)


def tier_of(margin: float, review_gap: float) -> str | None:
    """The tier of a track margin (score minus alert threshold), None below both."""
    if margin >= 0:
        return SIGHTING
    if margin >= -review_gap:
        return CANDIDATE
    return None


@dataclass(frozen=True)
class TrackVerdict:
    track_id: int
    person: int  # index into the matcher's people
    margin: float  # aggregated over the track, against the alert threshold
    faces: tuple[int, ...]  # rows of the track's faces that passed the quality gates
    tier: str = SIGHTING


def person_margin_per_face(table: FaceTable, rows: np.ndarray, person: int) -> np.ndarray:
    """Margin of ``person`` on each face in ``rows``; faces where they are not among the
    top-k get the k-th margin, an upper bound on theirs."""
    cand = table.cand_person[rows]
    marg = table.cand_margin[rows]
    hit = cand == person
    floor = marg[:, -1]
    return np.asarray(np.where(hit.any(axis=1), np.where(hit, marg, -np.inf).max(axis=1), floor))


# a track is "steadily" near the threshold only over this many faces (2.5 s at 2 fps):
# on short stand-in tracks of 3 photos of other people the best-frame clause made 6 false
# sightings of 1,260 (the mean of 3 alone: 0), and on the ground-truth videos every visit it
# recovers has 5 faces or more (187 of 246 with or without this floor)
STEADY_MIN_FACES = 5


def track_margin(margins: np.ndarray, top_n: int, review_gap: float | None) -> float:
    """A track's margin for one person from its faces' ``margins`` (sorted, best first):
    the mean of the best ``top_n``, or the best frame when the track has at least
    ``STEADY_MIN_FACES`` faces and its median face lies within ``review_gap`` of the alert
    threshold (see the module docstring)."""
    agg = float(margins[:top_n].mean())
    if review_gap is None or len(margins) < STEADY_MIN_FACES or not np.isfinite(margins[0]):
        return agg
    steady = min(float(margins[0]), float(np.median(margins)) + review_gap)
    return max(agg, steady)


def decide_tracks(
    table: FaceTable,
    track_ids: np.ndarray,
    top_n: int = 3,
    review_gap: np.ndarray | None = None,
) -> list[TrackVerdict]:
    """The verdict of every track that reaches a tier. ``review_gap`` (P,): per person, how
    far below the alert threshold a candidate may score (None: sightings only)."""
    verdicts = []
    for tid in np.unique(track_ids):
        rows = np.flatnonzero((track_ids == tid) & table.passed)
        if len(rows) == 0:
            continue
        candidates = np.unique(table.cand_person[rows])
        candidates = candidates[candidates >= 0]
        best, best_margin = -1, -np.inf
        for p in candidates:
            m = np.sort(person_margin_per_face(table, rows, int(p)))[::-1]
            gap = None if review_gap is None else float(review_gap[p])
            agg = track_margin(m, top_n, gap)
            if agg > best_margin:
                best, best_margin = int(p), agg
        if best < 0:
            continue
        tier = tier_of(best_margin, 0.0 if review_gap is None else float(review_gap[best]))
        if tier is not None:
            verdicts.append(TrackVerdict(int(tid), best, best_margin, tuple(rows.tolist()), tier))
    return verdicts


@dataclass
class SightingDraft:
    person: int
    rows: list[int]
    track_ids: list[int]
    start_s: float
    end_s: float
    tier: str = SIGHTING


def group_sightings(
    table: FaceTable, verdicts: list[TrackVerdict], link_gap_s: float
) -> list[SightingDraft]:
    """Merge matched tracks of one person whose time spans are within ``link_gap_s``."""
    by_person: dict[int, list[TrackVerdict]] = {}
    for v in verdicts:
        by_person.setdefault(v.person, []).append(v)
    drafts: list[SightingDraft] = []
    for person, tracks in by_person.items():
        spans = sorted(
            (
                (float(table.t[list(v.faces)].min()), float(table.t[list(v.faces)].max()), v)
                for v in tracks
            ),
            key=lambda span: (span[0], span[1], span[2].track_id),  # verdicts do not order
        )
        current: SightingDraft | None = None
        for start, end, v in spans:
            if current is not None and start - current.end_s <= link_gap_s:
                current.rows.extend(v.faces)
                current.track_ids.append(v.track_id)
                current.end_s = max(current.end_s, end)
                if v.tier == SIGHTING:
                    current.tier = SIGHTING
            else:
                current = SightingDraft(person, list(v.faces), [v.track_id], start, end, v.tier)
                drafts.append(current)
    drafts.sort(key=lambda d: (d.start_s, d.person))
    return drafts


def best_row(table: FaceTable, rows: list[int], person: int) -> int:
    """The face that best shows ``person``: the highest score."""
    idx = np.asarray(rows)
    margins = person_margin_per_face(table, idx, person)
    return int(idx[int(np.argmax(margins))])
