"""Linking faces across frames into tracks: box overlap plus embedding similarity.

A face joins the track it overlaps (IoU) unless its embedding clearly disagrees, or the
track whose embedding it clearly resembles even without overlap (sampled frames can be
half a second apart, long enough to walk out of the previous box). Assignment is greedy on
the combined affinity, one face per track per frame. Tracks unseen for ``max_gap_s`` close.
Faces that failed a quality gate carry no embedding and link on overlap alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrackerConfig:
    iou_min: float = 0.2  # overlap that links a face to a track on its own
    sim_link: float = 0.92  # similarity that links a face to a track without overlap
    sim_veto: float = 0.75  # similarity below which an overlapping face is someone else
    max_gap_s: float = 2.0  # a track unseen this long is closed

    # How far below the match threshold an overlapping face must score to be someone else.
    # Two people who pass through the same spot seconds apart must not share a track (the
    # track vote would give one of them both visits); a person split into two tracks costs
    # little, because sightings join nearby tracks of the same person.
    VETO_MARGIN = 0.06

    @classmethod
    def for_threshold(cls, threshold: float, **kw: float) -> TrackerConfig:
        """Link and veto similarities tied to the embedder's match threshold (cosine)."""
        return cls(sim_link=threshold, sim_veto=threshold - cls.VETO_MARGIN, **kw)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), x1 y1 x2 y2."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return (inter / np.maximum(union, 1e-9)).astype(np.float32)


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    last_t: float
    emb_sum: np.ndarray | None = None
    n: int = 0

    @property
    def embedding(self) -> np.ndarray | None:
        if self.emb_sum is None:
            return None
        return self.emb_sum / max(np.linalg.norm(self.emb_sum), 1e-9)


@dataclass
class Tracker:
    config: TrackerConfig = field(default_factory=TrackerConfig)
    _active: list[_Track] = field(default_factory=list)
    _next_id: int = 0

    def update(
        self, t: float, boxes: np.ndarray, embeddings: np.ndarray, has_embedding: np.ndarray
    ) -> np.ndarray:
        """Track ids (N,) for the faces of one frame at time ``t`` seconds."""
        cfg = self.config
        self._active = [tr for tr in self._active if t - tr.last_t <= cfg.max_gap_s]
        n = len(boxes)
        ids = np.full(n, -1, np.int64)
        affinity = self._affinity(boxes, embeddings, has_embedding)
        while affinity.size:
            i, j = divmod(int(np.argmax(affinity)), affinity.shape[1])
            if not np.isfinite(affinity[i, j]):
                break
            ids[i] = self._active[j].track_id
            self._extend(self._active[j], t, boxes[i], embeddings[i] if has_embedding[i] else None)
            affinity[i, :] = -np.inf
            affinity[:, j] = -np.inf
        for i in np.flatnonzero(ids < 0):
            tr = _Track(self._next_id, boxes[i].copy(), t)
            self._extend(tr, t, boxes[i], embeddings[i] if has_embedding[i] else None)
            self._active.append(tr)
            ids[i] = tr.track_id
            self._next_id += 1
        return ids

    def _affinity(self, boxes, embeddings, has_embedding) -> np.ndarray:
        cfg = self.config
        if not self._active or len(boxes) == 0:
            return np.zeros((len(boxes), len(self._active)))
        iou = iou_matrix(boxes, np.stack([tr.box for tr in self._active]))
        sim = np.full(iou.shape, np.nan, np.float32)
        for j, tr in enumerate(self._active):
            emb = tr.embedding
            if emb is not None and has_embedding.any():
                sim[has_embedding, j] = embeddings[has_embedding] @ emb
        known = ~np.isnan(sim)
        by_overlap = (iou >= cfg.iou_min) & ~(known & (sim < cfg.sim_veto))
        by_face = known & (sim >= cfg.sim_link)
        ok = by_overlap | by_face
        affinity = iou + np.where(known, sim, 0.0)
        return np.where(ok, affinity, -np.inf)

    @staticmethod
    def _extend(tr: _Track, t: float, box: np.ndarray, emb: np.ndarray | None) -> None:
        tr.box, tr.last_t, tr.n = box.copy(), t, tr.n + 1
        if emb is not None:
            tr.emb_sum = emb.astype(np.float64) if tr.emb_sum is None else tr.emb_sum + emb
