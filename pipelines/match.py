"""Matching faces against a watch list held in memory: one matrix product per batch.

Scores are cosine similarities of L2-normalised embeddings. A person enrolled with several
photos scores the mean of two numbers: the best of their photos, and their *template* (the
normalised mean of their photos' embeddings, each already averaged with its mirror image).
Measured on CelebA people against 6,157 LFW passers-by (benchmarks/bench_recall.py), this
finds more people than the best photo alone at the same false-alarm rate once a person has
three photos (TPIR at FPIR 1e-3: 72.1% against 67.2%), and about as many with two; with one
photo the two are the same. Each person carries the thresholds of their
list, so lists calibrated differently can be searched together: decisions use the margin
``score - threshold`` and a face matches when its best margin is >= 0.

Two operating points per person: the **alert** threshold (live alerts, and sightings in
archive search; calibrated for a false-alert rate) and the lower **review** threshold
(candidates in retrospective work only, for a person to review; calibrated for a
false-candidate rate). ``review_gap`` is how far below the alert threshold the review
threshold lies, so a margin >= -review_gap is a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.schemas import EmbedderInfo, check_same_space


@dataclass
class Gallery:
    """The active entries of one or more watch lists, as arrays (the in-memory list).

    One row per enrolment photo (entry); several rows may belong to one person.
    """

    embeddings: np.ndarray  # (M, D) float32, L2-normalised
    entry_ids: list[str]
    person_ids: list[str]
    person_names: list[str]
    list_names: list[str]
    photos: list[str]  # thumbnail path of each entry's enrolment photo
    embedder: EmbedderInfo
    thresholds: np.ndarray  # (M,) float32, the alert threshold in force for each entry
    snapshot_ids: dict[str, str] = field(default_factory=dict)
    # (M,) float32, the review threshold for each entry; None: no review tier (live)
    review_thresholds: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.review_thresholds is not None and np.any(
            self.review_thresholds > self.thresholds + 1e-6
        ):
            raise ValueError("a review threshold lies above its alert threshold")

    def __len__(self) -> int:
        return len(self.entry_ids)

    @property
    def people(self) -> list[str]:
        return list(dict.fromkeys(self.person_ids))


@dataclass
class FaceMatches:
    """Per face: the top-k people by margin. Arrays (N, k); ``person`` is -1 when empty."""

    person: np.ndarray  # (N, k) int32 index into Matcher.person_ids
    score: np.ndarray  # (N, k) float32 cosine similarity
    margin: np.ndarray  # (N, k) float32 score - threshold

    @property
    def matched(self) -> np.ndarray:
        return (self.person[:, 0] >= 0) & (self.margin[:, 0] >= 0)


class Matcher:
    """Scores faces against a gallery, person by person.

    Built for lists of 100k people (benchmarks/bench_match.py). A person's best-photo
    score is written through the mean ``c`` of their photos: ``max_i q.a_i = q.c +
    max_i q.(a_i - c)``, and ``q.c = |c| * q.t`` comes from the template product that is
    needed anyway. What is left are the photos' deviations from their mean:

    - one photo: none (the photo is its own mean);
    - two photos: one row ``d = (a_1 - a_2) / 2``, as the deviations are ``d`` and ``-d``,
      and the maximum is ``|q.d|``;
    - three or more: one row per photo, and a per-person maximum (``np.maximum.reduceat``
      over contiguous rows; ``np.maximum.at``, a scatter, cost 10x more).

    So a list of people with two photos each costs two products of P rows, not one of P
    and one of 2P, and no per-person maximum. The top k is a partial sort
    (``np.argpartition``), not a sort of every person.
    """

    def __init__(self, gallery: Gallery):
        self.gallery = gallery
        self.person_ids = gallery.people
        index = {p: i for i, p in enumerate(self.person_ids)}
        self._entry_person = np.array([index[p] for p in gallery.person_ids], np.int64)
        p = len(self.person_ids)
        review = (
            gallery.review_thresholds
            if gallery.review_thresholds is not None
            else gallery.thresholds
        )
        # per person, from its entries (the last entry's thresholds, the first's name)
        self.person_threshold = np.zeros(p, np.float32)
        self.person_review_threshold = np.zeros(p, np.float32)
        self.person_threshold[self._entry_person] = gallery.thresholds
        self.person_review_threshold[self._entry_person] = review
        first = np.unique(self._entry_person, return_index=True)[1]
        self.person_names = [gallery.person_names[e] for e in first]
        self.person_lists = [gallery.list_names[e] for e in first]
        self.person_photo = [""] * p
        for e in range(len(gallery.photos) - 1, -1, -1):  # the first photo a person has
            self.person_photo[self._entry_person[e]] = (
                gallery.photos[e] or self.person_photo[self._entry_person[e]]
            )
        self._one_photo_each = len(self._entry_person) == p
        emb = gallery.embeddings.astype(np.float64)
        counts = np.bincount(self._entry_person, minlength=p)
        means = np.zeros((p, emb.shape[1]), np.float64)
        np.add.at(means, self._entry_person, emb)
        means /= np.maximum(counts, 1)[:, None]
        norms = np.linalg.norm(means, axis=1)
        self.templates = (means / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
        self._mean_norm = norms.astype(np.float32)
        self._deviations(emb, means, counts)

    def _deviations(self, emb: np.ndarray, means: np.ndarray, counts: np.ndarray) -> None:
        """The deviation rows (see the class docstring), grouped by person: ``_dev`` (R, D),
        ``_dev_two`` (R,) True for a two-photo person's one row, ``_dev_person`` the
        person of each group and ``_dev_starts`` where each group starts."""
        order = np.argsort(self._entry_person, kind="stable")
        person = self._entry_person[order]
        two = counts[person] == 2
        first = np.r_[True, person[1:] != person[:-1]]
        keep = (counts[person] >= 3) | (two & first)  # a two-photo person: their first row
        rows = emb[order] - means[person]  # a_i - c; for two photos, a_1 - c = (a_1 - a_2)/2
        self._dev = np.ascontiguousarray(rows[keep], np.float32)
        self._dev_two = two[keep]
        kept = person[keep]
        self._dev_starts = np.flatnonzero(np.r_[True, kept[1:] != kept[:-1]]) if len(kept) else kept
        self._dev_person = kept[self._dev_starts]
        self._one_row_each = len(kept) == len(self._dev_person)
        self._all_two = bool(self._dev_two.all())

    @property
    def review_gap(self) -> np.ndarray:
        """(P,) alert minus review threshold per person (0: no review tier)."""
        return np.asarray(np.maximum(self.person_threshold - self.person_review_threshold, 0.0))

    def person_scores(self, embeddings: np.ndarray, info: EmbedderInfo) -> np.ndarray:
        """(N, P) similarity of each face to each person: the mean of their best photo's
        score and their template's score (see the module's docstring)."""
        check_same_space(info, self.gallery.embedder)
        n, p = len(embeddings), len(self.person_ids)
        if n == 0 or p == 0:
            return np.zeros((n, p), np.float32)
        faces = np.ascontiguousarray(embeddings, np.float32)
        if self._one_photo_each:  # template == photo (up to rounding): one product
            return np.asarray(faces @ self.templates.T)
        to_template = faces @ self.templates.T  # (N, P)
        best = to_template * self._mean_norm[None, :]  # q.c
        if len(self._dev):
            dev = faces @ self._dev.T  # (N, R)
            if self._all_two:
                np.abs(dev, out=dev)
            else:
                dev[:, self._dev_two] = np.abs(dev[:, self._dev_two])
            if not self._one_row_each:
                dev = np.maximum.reduceat(dev, self._dev_starts, axis=1)
            best[:, self._dev_person] += dev
        best += to_template
        best *= 0.5
        return np.asarray(best)

    def match(self, embeddings: np.ndarray, info: EmbedderInfo, k: int = 3) -> FaceMatches:
        scores = self.person_scores(embeddings, info)
        n, p = scores.shape
        k = max(1, k)
        person = np.full((n, k), -1, np.int32)
        score = np.full((n, k), -np.inf, np.float32)
        margin = np.full((n, k), -np.inf, np.float32)
        if p:
            margins = scores - self.person_threshold[None, :]
            kk = min(k, p)
            top = _top_k(margins, kk)
            person[:, :kk] = top
            score[:, :kk] = np.take_along_axis(scores, top, axis=1)
            margin[:, :kk] = np.take_along_axis(margins, top, axis=1)
        return FaceMatches(person, score, margin)


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """(N, k) column indices of each row's k largest values, largest first: a partial
    sort, then a sort of the k alone (O(P) per row, not O(P log P))."""
    if k >= values.shape[1]:
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # index order first, so the stable sort below breaks ties by index
    vals = np.take_along_axis(values, part, axis=1)
    return np.take_along_axis(part, np.argsort(-vals, axis=1, kind="stable"), axis=1)
