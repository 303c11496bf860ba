"""The 1:N watch-list evaluation protocol: enrol part of a gallery, search everything else.

Inputs are two folders in the ``DIR/<identity>/<images>`` layout:
- gallery: of each identity, the first ``enroll_per_id`` usable images (a face that passes
  the quality gates, as enrolment demands) are enrolled; its other images are mated probes.
  Images before them that are unusable cannot be enrolled and are counted
  (``enrol_skipped``); an identity with no usable image is not enrolled at all and its
  images are left out (``not_enrolled``).
- distractors: every image is a non-mated probe. Identities in both folders are refused.

Every probe runs the production pipeline (``faces.extract_faces``) once; its largest face is
the search. Probes with no face or rejected by a gate count as misses / non-alarms and are
reported separately. Scores are person scores from ``match.Matcher``, the code live cameras
and archive searches use. The enrolled images are embedded as enrolment embeds photos
(``photo_embeddings``: with test-time augmentation when the embedder's ``photo_tta`` is on);
probes, like faces in video, are embedded once.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import FacewatchError
from pipelines.evaluation import identification as ident
from pipelines.evaluation.faces import NO_FACE, ImageFaces, identity_images
from pipelines.match import Gallery, Matcher
from pipelines.schemas import EmbedderInfo

UNGROUPED = "(no group)"
# (faces, rows) -> (len(rows), D) embeddings of those rows' faces as enrolment embeds them
PhotoEmbed = Callable[[ImageFaces, np.ndarray], np.ndarray]


class EvaluationInputError(FacewatchError, ValueError):
    """The evaluation inputs are inconsistent; the message says which and how."""


@dataclass
class Plan:
    gallery: dict[str, list[Path]]
    distractors: dict[str, list[Path]]

    @property
    def gallery_paths(self) -> list[Path]:
        return [p for ps in self.gallery.values() for p in ps]

    @property
    def gallery_ids(self) -> list[str]:
        return [i for i, ps in self.gallery.items() for _ in ps]

    @property
    def distractor_paths(self) -> list[Path]:
        return [p for ps in self.distractors.values() for p in ps]

    @property
    def distractor_ids(self) -> list[str]:
        return [i for i, ps in self.distractors.items() for _ in ps]


def plan(gallery: Path, distractors: Path) -> Plan:
    """Both folders' images; refuses identities present in both."""
    g, d = identity_images(gallery), identity_images(distractors)
    overlap = sorted(set(g) & set(d))
    if overlap:
        shown = ", ".join(overlap[:5]) + (" ..." if len(overlap) > 5 else "")
        raise EvaluationInputError(
            f"{len(overlap)} identities are in both the gallery and the distractors ({shown}); "
            "a distractor must be someone not on the list. Remove them from one folder."
        )
    return Plan(g, d)


def read_groups(path: Path, identities: set[str]) -> dict[str, str]:
    """``identity,group`` rows (an ``identity,group`` header is allowed). Every identity
    must be one of ``identities``; each may appear once."""
    groups: dict[str, str] = {}
    unknown: list[str] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for no, row in enumerate(csv.reader(fh), 1):
            if not row or not "".join(row).strip() or row[0].startswith("#"):
                continue
            if no == 1 and [c.strip().lower() for c in row] == ["identity", "group"]:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise EvaluationInputError(f"{path}:{no}: expected 'identity,group', got {row}")
            who, group = row[0].strip(), row[1].strip()
            if who not in identities:
                unknown.append(f"{who!r} (line {no})")
            elif groups.setdefault(who, group) != group:
                raise EvaluationInputError(f"{path}:{no}: {who!r} is given two groups")
    if unknown:
        raise EvaluationInputError(
            f"{path}: {len(unknown)} identities are in neither the gallery nor the "
            f"distractors: {', '.join(unknown[:5])}" + (" ..." if len(unknown) > 5 else "")
        )
    return groups


@dataclass
class Split:
    """Who is enrolled with which image rows, and which rows are mated probes."""

    people: list[str]
    enrol_rows: list[np.ndarray]  # per person, gallery rows enrolled
    probe_rows: np.ndarray  # gallery rows searched as mated probes
    probe_person: np.ndarray  # column (person index) of each mated probe
    enrol_skipped: int = 0
    not_enrolled: list[str] = field(default_factory=list)


def split_gallery(ids: list[str], usable: np.ndarray, enroll_per_id: int) -> Split:
    """Enrol the first ``enroll_per_id`` usable images of each identity; probe the rest."""
    if enroll_per_id < 1:
        raise EvaluationInputError("--enroll-per-id must be at least 1")
    usable = np.asarray(usable, bool)
    ids_arr = np.asarray(ids)
    people, enrol, probes, probe_person, not_enrolled, skipped = [], [], [], [], [], 0
    for who in dict.fromkeys(ids):
        rows = np.flatnonzero(ids_arr == who)
        good = rows[usable[rows]][:enroll_per_id]
        if len(good) == 0:
            not_enrolled.append(who)
            continue
        last = good[-1]
        skipped += int((~usable[rows[rows < last]]).sum())
        rest = rows[rows > last]
        people.append(who)
        enrol.append(good)
        probes.append(rest)
        probe_person.append(np.full(len(rest), len(people) - 1))
    return Split(
        people,
        enrol,
        np.concatenate(probes).astype(np.int64) if probes else np.zeros(0, np.int64),
        np.concatenate(probe_person).astype(np.int64) if probes else np.zeros(0, np.int64),
        skipped,
        not_enrolled,
    )


def eval_gallery(
    split: Split,
    faces: ImageFaces,
    info: EmbedderInfo,
    photo_embed: PhotoEmbed | None = None,
) -> Gallery:
    """The enrolled images as a watch-list gallery (threshold 0: scores are what we want).
    ``photo_embed``: embeds the enrolled rows as enrolment does (default: as probes)."""
    rows = np.concatenate(split.enrol_rows)
    person = [split.people[i] for i, r in enumerate(split.enrol_rows) for _ in r]
    n = len(rows)
    return Gallery(
        embeddings=photo_embed(faces, rows) if photo_embed else faces.embeddings[rows],
        entry_ids=[f"e{i}" for i in range(n)],
        person_ids=person,
        person_names=person,
        list_names=["evaluation"] * n,
        photos=[str(p) for p in faces.paths[rows]],
        embedder=info,
        thresholds=np.zeros(n, np.float32),
    )


def person_scores(matcher: Matcher, faces: ImageFaces, info: EmbedderInfo) -> np.ndarray:
    """(N, P) person scores; rows of unusable faces are -inf (never alarm, never hit)."""
    scores = matcher.person_scores(faces.embeddings, info).astype(np.float64)
    scores[~faces.usable()] = -np.inf
    return scores


def unusable_counts(faces: ImageFaces) -> tuple[int, dict[str, int]]:
    """(images with no face, {gate reason: count} of faces rejected)."""
    no_face = int((faces.reason == NO_FACE).sum())
    rejected = faces.reason[(faces.reason != "") & (faces.reason != NO_FACE)]
    reasons, counts = np.unique(rejected, return_counts=True)
    return no_face, {str(r): int(c) for r, c in zip(reasons, counts, strict=True)}


@dataclass
class Evaluation:
    """Everything measured, in memory; ``report()`` turns it into the JSON document."""

    scores: ident.ScoreSet
    split: Split
    mated_ids: list[str]
    nonmated_ids: list[str]
    mated_faces: ImageFaces
    nonmated_faces: ImageFaces
    embedder: str
    default_threshold: float

    @property
    def searches(self) -> ident.Searches:
        return self.scores.searches()


def evaluate(
    plan_: Plan,
    gallery_faces: ImageFaces,
    distractor_faces: ImageFaces,
    info: EmbedderInfo,
    default_threshold: float,
    enroll_per_id: int = 1,
    photo_embed: PhotoEmbed | None = None,
) -> Evaluation:
    """Score every mated and non-mated probe against the enrolled list."""
    split = split_gallery(plan_.gallery_ids, gallery_faces.usable(), enroll_per_id)
    if not split.people:
        raise EvaluationInputError("no gallery identity has a usable image to enrol")
    matcher = Matcher(eval_gallery(split, gallery_faces, info, photo_embed))
    mated_faces = gallery_faces.select(split.probe_rows)
    scores = ident.ScoreSet(
        mated=person_scores(matcher, mated_faces, info),
        mated_person=split.probe_person,
        nonmated=person_scores(matcher, distractor_faces, info),
    )
    ids = np.asarray(plan_.gallery_ids)
    return Evaluation(
        scores=scores,
        split=split,
        mated_ids=[str(i) for i in ids[split.probe_rows]],
        nonmated_ids=plan_.distractor_ids,
        mated_faces=mated_faces,
        nonmated_faces=distractor_faces,
        embedder=info.key,
        default_threshold=default_threshold,
    )


def report(
    ev: Evaluation,
    list_sizes: list[int] | None = None,
    groups: dict[str, str] | None = None,
    seeds: int = 5,
) -> dict[str, Any]:
    """The metrics document: summary, unusable probes, DET, list sizes, per group."""
    s = ev.searches
    out = {"embedder": ev.embedder, **ident.summary(s, ev.default_threshold)}
    m_none, m_rej = unusable_counts(ev.mated_faces)
    n_none, n_rej = unusable_counts(ev.nonmated_faces)
    out.update(
        no_face={"mated": m_none, "nonmated": n_none},
        rejected={"mated": m_rej, "nonmated": n_rej},
        enrolled_people=len(ev.split.people),
        enrolled_images=int(sum(len(r) for r in ev.split.enrol_rows)),
        enrol_skipped=ev.split.enrol_skipped,
        not_enrolled=ev.split.not_enrolled,
        det=ident.det_curve(s),
    )
    if list_sizes:
        out["list_sizes"] = ident.list_size_scaling(
            ev.scores, list_sizes, ev.default_threshold, 1e-3, seeds
        )
    if groups is not None:
        out["per_group"] = group_report(ev, s, groups, out["threshold_at_fpir"])
    jsonable: dict[str, Any] = ident.as_jsonable(out)
    return jsonable


def group_report(
    ev: Evaluation, s: ident.Searches, groups: dict[str, str], at: dict[str, Any]
) -> dict[str, Any]:
    """Per-group rates at the default threshold and at the threshold for FPIR 1e-3."""
    mg = [groups.get(i, UNGROUPED) for i in ev.mated_ids]
    ng = [groups.get(i, UNGROUPED) for i in ev.nonmated_ids]
    out = {"default": ident.per_group(s, mg, ng, ev.default_threshold)}
    key = ident.target_key(1e-3)
    if at.get(key) is not None:
        out[f"fpir_{key}"] = ident.per_group(s, mg, ng, at[key])
    return out
