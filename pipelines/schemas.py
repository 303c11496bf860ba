"""Boundary types: the data that flows between stages, in one place.

Arrays inside, batch-friendly, no per-face Python objects on hot paths (see STYLE.md).
Landmark order everywhere is MTCNN's: left eye, right eye, nose tip, left mouth corner,
right mouth corner, where "left" means the image's left (the subject's right eye).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipelines.errors import FacewatchError

LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class EmbedderInfo:
    """Identity of an embedding space. Embeddings from different spaces never compare."""

    name: str
    version: str
    dim: int

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}/{self.dim}"


class EmbedderMismatchError(FacewatchError, ValueError):
    """Raised when embeddings of two different embedders would be compared or mixed."""

    http_status = 500  # the server's own set-up: not the client's to fix


def check_same_space(a: EmbedderInfo, b: EmbedderInfo) -> None:
    if a != b:
        raise EmbedderMismatchError(
            f"embeddings come from different embedders: {a.key} vs {b.key}; "
            "re-enrol the watch list with the embedder in use, or switch the embedder back"
        )


@dataclass
class FaceDetections:
    """Faces found in a batch of frames. Row i belongs to frame ``frame_index[i]``."""

    frame_index: np.ndarray  # (N,) int32
    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in the original frame's pixels
    landmarks: np.ndarray  # (N, 5, 2) float32, x y in the original frame's pixels
    scores: np.ndarray  # (N,) float32 detector probability

    @classmethod
    def empty(cls) -> FaceDetections:
        return cls(
            frame_index=np.zeros((0,), np.int32),
            boxes=np.zeros((0, 4), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
            scores=np.zeros((0,), np.float32),
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, index: np.ndarray) -> FaceDetections:
        return FaceDetections(
            self.frame_index[index], self.boxes[index], self.landmarks[index], self.scores[index]
        )

    @classmethod
    def concat(cls, parts: list[FaceDetections]) -> FaceDetections:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.frame_index for p in parts]).astype(np.int32),
            np.concatenate([p.boxes for p in parts]).astype(np.float32),
            np.concatenate([p.landmarks for p in parts]).astype(np.float32),
            np.concatenate([p.scores for p in parts]).astype(np.float32),
        )

    @property
    def eye_distance(self) -> np.ndarray:
        return np.linalg.norm(self.landmarks[:, 1] - self.landmarks[:, 0], axis=1)

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]


@dataclass
class Quality:
    """Quality-gate verdicts, one row per detected face."""

    passed: np.ndarray  # (N,) bool
    reason: np.ndarray  # (N,) object: "" when passed, else e.g. "blur", "pose", "small"
    eye_distance: np.ndarray  # (N,) float32, pixels in the original frame
    blur: np.ndarray  # (N,) float32, variance of the Laplacian on the aligned chip
    yaw: np.ndarray  # (N,) float32, degrees, estimated from landmarks
    pitch: np.ndarray  # (N,) float32, degrees, estimated from landmarks
    score: np.ndarray  # (N,) float32, detector probability

    @property
    def quality_score(self) -> np.ndarray:
        """One number per face for picking the best face of a track (higher is better)."""
        size = np.clip(self.eye_distance / 40.0, 0, 1)
        frontal = np.clip(1 - np.abs(self.yaw) / 60.0, 0, 1)
        sharp = np.clip(np.log1p(self.blur) / np.log1p(400.0), 0, 1)
        return (size * frontal * sharp * self.score).astype(np.float32)

    def rejection_counts(self) -> dict[str, int]:
        reasons, counts = np.unique(self.reason[~self.passed].astype(str), return_counts=True)
        return {str(r): int(c) for r, c in zip(reasons, counts, strict=True)}


@dataclass
class FaceBatch:
    """What the engine returns for a batch of frames: detections, verdicts, embeddings.

    ``embeddings`` has a row for every face; rows of faces that failed a quality gate are
    zeros and must not be matched (use ``quality.passed``).
    """

    detections: FaceDetections
    quality: Quality
    embeddings: np.ndarray  # (N, D) float32
    embedder: EmbedderInfo
    n_frames: int
    crops: list[np.ndarray] | None = None  # optional small RGB crops for thumbnails

    def __len__(self) -> int:
        return len(self.detections)

    @property
    def passed(self) -> np.ndarray:
        return self.quality.passed


@dataclass
class Match:
    """One matched face (archive) or the best face of an alerting track (live)."""

    match_id: str
    person_id: str
    person_name: str
    list_name: str
    score: float
    source: str  # "archive" or "live"
    source_id: str  # file content hash (archive) or camera id (live)
    source_path: str
    frame_index: int
    timestamp_s: float
    box: tuple[float, float, float, float]
    track_id: int = -1
    face_index: int = 0
    snapshot_id: str = ""
    thumbnail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = list(self.box)
        return d


@dataclass
class Sighting:
    """Consecutive matches of one person in one file: who, where, from when to when."""

    person_id: str
    person_name: str
    list_name: str
    source_path: str
    source_id: str
    start_s: float
    end_s: float
    best_score: float
    best_frame_s: float
    n_frames: int
    thumbnail: str = ""
    watchlist_photo: str = ""
    track_ids: list[int] = field(default_factory=list)
    tier: str = "sighting"  # "sighting" (alert tier) or "candidate" (review tier)
    threshold: float = float("nan")  # the person's alert threshold in this search
    review_threshold: float = float("nan")  # the person's review threshold in this search
    sighting_id: str = ""  # stable for the same case, file, person and span

    def row(self) -> dict[str, Any]:
        return asdict(self)


def split_batch(batch: FaceBatch) -> list[FaceBatch]:
    """One FaceBatch per frame, frame indices starting at 0 in each."""
    out = []
    for f in range(batch.n_frames):
        rows = np.flatnonzero(batch.detections.frame_index == f)
        dets = batch.detections.select(rows)
        dets.frame_index = np.zeros(len(rows), np.int32)
        out.append(
            FaceBatch(
                detections=dets,
                quality=select_quality(batch.quality, rows),
                embeddings=batch.embeddings[rows],
                embedder=batch.embedder,
                n_frames=1,
                crops=[batch.crops[i] for i in rows] if batch.crops is not None else None,
            )
        )
    return out


def concat_batches(parts: list[FaceBatch]) -> FaceBatch:
    """Join batches of consecutive frame chunks; frame indices are offset accordingly."""
    if not parts:
        raise ValueError("nothing to concatenate")
    offset, dets, quals, crops = 0, [], [], []
    for p in parts:
        d = p.detections.select(np.arange(len(p)))
        d.frame_index = d.frame_index + offset
        dets.append(d)
        quals.append(p.quality)
        crops.extend(p.crops or [])
        offset += p.n_frames
    return FaceBatch(
        detections=FaceDetections.concat(dets),
        quality=Quality(
            **{
                k: np.concatenate([getattr(q, k) for q in quals])
                for k in ("passed", "reason", "eye_distance", "blur", "yaw", "pitch", "score")
            }
        ),
        embeddings=np.concatenate([p.embeddings for p in parts]),
        embedder=parts[0].embedder,
        n_frames=offset,
        crops=crops if all(p.crops is not None for p in parts) else None,
    )


def select_quality(q: Quality, rows: np.ndarray) -> Quality:
    return Quality(
        q.passed[rows],
        q.reason[rows],
        q.eye_distance[rows],
        q.blur[rows],
        q.yaw[rows],
        q.pitch[rows],
        q.score[rows],
    )
