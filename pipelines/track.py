"""Linking faces across frames into tracks: box overlap plus embedding similarity.

Two ways to join a track, one face per track per frame (greedy on the combined affinity):
- **continuing**: the track was seen in the sampled frame just before (within ``near_s``),
  the face overlaps its box (IoU) and does not clearly differ from its last face
  (similarity >= ``sim_veto``). A face moving and turning between two frames half a second
  apart changes a lot (a singer's face: 0.91 at 2 fps), so this bar is moderate: it stops a
  clearly different face, while the overlap in the very next frame does most of the work;
- **resuming**: after a gap (nobody there in between), or without overlap, only a face
  that clearly resembles the track, its last face and its mean alike (>= ``sim_link``).
  Different people who pass the same spot a second apart must not share a track: the
  track's vote would give one of them both visits. The link sits above every pair of
  different people measured; a person split into two tracks costs little, because
  sightings join nearby tracks of the same person.
Tracks unseen for ``max_gap_s`` close. Faces that failed a quality gate carry no embedding
and continue a track on overlap alone, never resume one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrackerConfig:
    """How faces link into tracks. Similarities are cosine, on the embedder's own scale.

    Tracking never depends on a match threshold: a track is "one face seen over time",
    whoever it turns out to be, so the same footage gives the same tracks whatever list,
    tier or ``--threshold`` it is searched with, and lowering a threshold can only add
    sightings, never merge two people into one track (see ``for_embedder``).
    """

    iou_min: float = 0.2  # overlap that continues a track
    sim_link: float = 0.95  # similarity that resumes a track (after a gap, or no overlap)
    sim_veto: float = 0.85  # below this, an overlapping face in the next frame is someone else
    max_gap_s: float = 2.0  # a track unseen this long is closed
    near_s: float = 0.75  # a track seen this recently is continued (sampled frame before)

    @classmethod
    def for_embedder(cls, name: str, **kw: float) -> TrackerConfig:
        """The link and veto similarities measured for embedder ``name``."""
        link, veto = TRACK_SIMILARITIES.get(name, (cls.sim_link, cls.sim_veto))
        return cls(sim_link=link, sim_veto=veto, **kw)


# (link, veto) per embedder, measured on the faces of four ground-truth videos at 2 fps
# (benchmarks/bench_recall.py -> bench_recall.json, video.tracking). dlib-resnet: two
# different people score up to 0.92 within 2 s of each other and up to 0.94 at any time, so
# a track resumes only at 0.95. The same face 0.5 s later scores 0.997 at the median but
# 0.88 at its 5th percentile (a singer turning: 0.91), so continuing on overlap vetoes only
# below 0.85; half of all pairs of different people score above 0.84, which is why
# continuing also needs the box overlap and the frame just before.
TRACK_SIMILARITIES: dict[str, tuple[float, float]] = {
    "dlib-resnet": (0.95, 0.85),
}


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
    return np.asarray((inter / np.maximum(union, 1e-9)).astype(np.float32))


@dataclass
class _Track:
    track_id: int
    box: np.ndarray
    last_t: float
    emb_sum: np.ndarray | None = None
    last_emb: np.ndarray | None = None
    n: int = 0

    @property
    def embedding(self) -> np.ndarray | None:
        if self.emb_sum is None:
            return None
        return np.asarray(self.emb_sum / max(np.linalg.norm(self.emb_sum), 1e-9))


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
        affinity = self._affinity(t, boxes, embeddings, has_embedding)
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

    def _affinity(
        self, t: float, boxes: np.ndarray, embeddings: np.ndarray, has_embedding: np.ndarray
    ) -> np.ndarray:
        cfg = self.config
        if not self._active or len(boxes) == 0:
            return np.zeros((len(boxes), len(self._active)))
        iou = iou_matrix(boxes, np.stack([tr.box for tr in self._active]))
        last = np.full(iou.shape, np.nan, np.float32)  # similarity to the track's last face
        both = np.full(iou.shape, np.nan, np.float32)  # the lower of last face and mean
        for j, tr in enumerate(self._active):
            if tr.last_emb is not None and has_embedding.any():
                e = embeddings[has_embedding]
                last[has_embedding, j] = e @ tr.last_emb
                both[has_embedding, j] = np.minimum(last[has_embedding, j], e @ tr.embedding)
        near = np.array([t - tr.last_t <= cfg.near_s for tr in self._active])[None, :]
        known = ~np.isnan(last)
        continuing = near & (iou >= cfg.iou_min) & ~(known & (last < cfg.sim_veto))
        resuming = known & (both >= cfg.sim_link)
        affinity = iou + np.where(known, last, 0.0)
        return np.where(continuing | resuming, affinity, -np.inf)

    @staticmethod
    def _extend(tr: _Track, t: float, box: np.ndarray, emb: np.ndarray | None) -> None:
        tr.box, tr.last_t, tr.n = box.copy(), t, tr.n + 1
        if emb is not None:
            tr.emb_sum = emb.astype(np.float64) if tr.emb_sum is None else tr.emb_sum + emb
            tr.last_emb = emb.astype(np.float32)
