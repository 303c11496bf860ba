"""Matching faces against a watch list held in memory: one matrix product per batch.

Scores are cosine similarities of L2-normalised embeddings. A person enrolled with several
photos scores the maximum over their photos. Each person carries the threshold of their
list, so lists calibrated differently can be searched together: decisions use the margin
``score - threshold`` and a face matches when its best margin is >= 0.
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
    thresholds: np.ndarray  # (M,) float32, the threshold in force for each entry's list
    snapshot_ids: dict[str, str] = field(default_factory=dict)

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
    """Scores faces against a gallery, person by person."""

    def __init__(self, gallery: Gallery):
        self.gallery = gallery
        self.person_ids = gallery.people
        index = {p: i for i, p in enumerate(self.person_ids)}
        self._entry_person = np.array([index[p] for p in gallery.person_ids], np.int64)
        self.person_threshold = np.zeros(len(self.person_ids), np.float32)
        self.person_names = [""] * len(self.person_ids)
        self.person_lists = [""] * len(self.person_ids)
        self.person_photo = [""] * len(self.person_ids)
        for e, p in enumerate(self._entry_person):
            self.person_threshold[p] = gallery.thresholds[e]
            self.person_names[p] = gallery.person_names[e]
            self.person_lists[p] = gallery.list_names[e]
            self.person_photo[p] = self.person_photo[p] or gallery.photos[e]
        self._best_entry: np.ndarray | None = None

    def person_scores(self, embeddings: np.ndarray, info: EmbedderInfo) -> np.ndarray:
        """(N, P) best similarity of each face to each person."""
        check_same_space(info, self.gallery.embedder)
        n, p = len(embeddings), len(self.person_ids)
        if n == 0 or p == 0:
            return np.zeros((n, p), np.float32)
        entry = embeddings.astype(np.float32) @ self.gallery.embeddings.T  # (N, M)
        out = np.full((n, p), -np.inf, np.float32)
        np.maximum.at(out.T, self._entry_person, entry.T)
        return out

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
            top = np.argsort(-margins, axis=1)[:, :kk]
            person[:, :kk] = top
            score[:, :kk] = np.take_along_axis(scores, top, axis=1)
            margin[:, :kk] = np.take_along_axis(margins, top, axis=1)
        return FaceMatches(person, score, margin)
