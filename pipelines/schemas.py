"""Boundary types: the data that flows between stages, in one place.

Arrays inside, batch-friendly, no per-face Python objects on hot paths (see STYLE.md).
Landmark order everywhere is MTCNN's: left eye, right eye, nose tip, left mouth corner,
right mouth corner, where "left" means the image's left (the subject's right eye).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, with_config
from typing_extensions import NotRequired, Required, TypedDict

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
        return np.asarray(np.linalg.norm(self.landmarks[:, 1] - self.landmarks[:, 0], axis=1))

    @property
    def widths(self) -> np.ndarray:
        return np.asarray(self.boxes[:, 2] - self.boxes[:, 0])


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
        return np.asarray((size * frontal * sharp * self.score).astype(np.float32))

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


# -- the archive search's face rows ------------------------------------------------------
# One row per detected face, per analysed frame without faces, or per decode error: the
# columns the search's face stage (jobs/search_stages.py) writes into Ray Data blocks and
# the driver (jobs/archive/search.py) reads back per file. One spec, so the two cannot drift.
@dataclass(frozen=True)
class FaceColumn:
    """A face-row column: its numpy dtype, its width per row (``None``: a scalar; ``"dim"``
    the embedder's dimension; ``"top_k"`` one per candidate), and whether the driver keeps
    it per face for the file's table."""

    name: str
    dtype: Any  # a numpy scalar type, or object (str and bytes)
    width: int | str | None = None
    per_face: bool = True


FACE_ROW: tuple[FaceColumn, ...] = (
    FaceColumn("kind", object, per_face=False),  # "face", "frame" or "error"
    FaceColumn("file_id", object, per_face=False),
    FaceColumn("frame_index", np.int64),
    FaceColumn("t", np.float64),
    FaceColumn("face_index", np.int64),
    FaceColumn("box", np.float32, 4),
    FaceColumn("passed", np.bool_),
    FaceColumn("reason", object),  # the quality gate that refused the face, or ""
    FaceColumn("quality", np.float64),
    FaceColumn("embedding", np.float32, "dim"),
    FaceColumn("cand_person", np.int32, "top_k"),
    FaceColumn("cand_score", np.float32, "top_k"),
    FaceColumn("cand_margin", np.float32, "top_k"),
    FaceColumn("crop", object),  # JPEG bytes, or b"" for a face far from every candidate
    FaceColumn("error", object, per_face=False),
    FaceColumn("n_missing", np.int64, per_face=False),  # frames a decode error cost
    FaceColumn("n_faces", np.int64, per_face=False),  # faces found in a "frame" row
)
FACE_ROW_PER_FACE: tuple[str, ...] = tuple(c.name for c in FACE_ROW if c.per_face)


def face_row_defaults(dim: int, top_k: int) -> dict[str, Any]:
    """The value of each column in a row that does not set it (a frame or error row)."""
    out: dict[str, Any] = {}
    for c in FACE_ROW:
        if c.width is None:
            out[c.name] = b"" if c.name == "crop" else "" if c.dtype is object else c.dtype(0)
        else:
            width = {"dim": dim, "top_k": top_k}.get(str(c.width), c.width)
            fill = -1 if c.dtype is np.int32 else -np.inf if c.name.startswith("cand") else 0
            out[c.name] = np.full(int(width), fill, c.dtype)
    out["face_index"] = np.int64(-1)
    return out


def face_row_columns(cols: dict[str, list[Any]], dim: int, top_k: int) -> dict[str, Any]:
    """Row values gathered per column, as the block's typed arrays."""
    out: dict[str, Any] = {}
    for c in FACE_ROW:
        v = cols[c.name]
        if c.width is not None:
            width = {"dim": dim, "top_k": top_k}.get(str(c.width), c.width)
            out[c.name] = np.asarray(v, c.dtype).reshape(len(v), int(width))
        else:
            out[c.name] = np.array(v, dtype=c.dtype)
    return out


# -- records that cross modules as JSON-shaped dicts ---------------------------------------
# These travel as plain dicts (into SQLite JSON, audit records, webhooks, SSE and HTTP
# answers), so they are declared as TypedDicts: mypy checks every key read and written, no
# caller has to convert, and pydantic validates the same types where the API answers
# (``serve/api.py`` response models). ``extra="allow"``: a key a newer writer adds is kept.
_OPEN = ConfigDict(extra="allow")


@with_config(_OPEN)
class ReviewTierRecord(TypedDict, total=False):
    """The review tier of a calibration: its threshold for a bounded false-candidate rate."""

    threshold: Required[float]
    target_candidate_rate: Required[float]
    false_alarms: int
    rate: float | None
    rate_ci95: list[float]
    person_thresholds: dict[str, float]


@with_config(_OPEN)
class FpirMeasurement(TypedDict):
    """The FPIR a calibration achieved, and on what it was measured."""

    target_fpir: float
    n_nonmated: int
    false_alarms: int
    fpir: float | None
    fpir_ci95: list[float]
    list_size: int
    embedder: str
    distractors: str
    images: int
    no_face: int
    rejected: dict[str, int]


@with_config(_OPEN)
class CalibrationRecord(FpirMeasurement, total=False):
    """What ``facewatch watchlist calibrate`` measured, stored with the list (calibration
    json) and audited: the alert threshold for a target FPIR, how it was measured, the
    review tier, and the FPIR curve (``[threshold, fpir]`` pairs). Records stored by older
    releases may lack the measurement keys: read those with ``.get``."""

    mode: Required[Literal["list", "per-person"]]
    threshold: Required[float]
    review: Required[ReviewTierRecord]
    curve: Required[list[list[float]]]
    shift: float
    tail_k: int
    n_cohort: int
    person_thresholds: dict[str, float]
    date: str  # set when recorded on a list
    by: str


@with_config(_OPEN)
class ListRow(TypedDict):
    """A watch list as the catalog keeps it (``Catalog.get_list``)."""

    name: str
    created_at: str
    created_by: str
    threshold: float | None
    threshold_source: str
    calibration_json: str | None
    size_cap: int | None
    allow_minors: int
    version: int
    calibration: NotRequired[CalibrationRecord]


@with_config(_OPEN)
class ListView(ListRow):
    """A list with what is in force on it now (``Watchlists.lists``)."""

    active_people: int
    threshold_in_force: float
    threshold_how: str
    expected_fpir: float | None
    review_threshold_in_force: float
    review_threshold_how: str
    expected_candidate_rate: float | None


@with_config(_OPEN)
class PersonRow(TypedDict):
    """A person on a list, with counts of their photos (``Watchlists.people``)."""

    person_id: str
    list_name: str
    name: str
    category: str
    reason: str
    authorised_by: str | None
    added_by: str
    created_at: str
    expires_on: str | None
    minor: int
    removed_at: str | None
    removed_by: str | None
    image_source: str | None
    images: int
    images_single_pass: int
    borderline: str
    status: Literal["active", "expired", "removed"]


@with_config(_OPEN)
class AlertRecord(TypedDict):
    """One live alert as decided: stored in the review book and Milvus, sent to webhooks
    and the SSE stream. Times are Unix seconds (``alerted_at``, ``observed_at``)."""

    alert_id: str
    camera_id: str
    camera: str  # the camera's URL without its password
    person_id: str
    person_name: str
    list_name: str
    score: float
    face_score: float
    threshold: float
    margin: float
    track_id: int
    track_faces: int
    frame_seq: int
    face_index: int
    box: list[float]
    observed_at: float
    trigger_seq: int
    trigger_received_at: float
    alerted_at: float
    snapshot_id: str
    photo: str
    status: Literal["pending", "confirmed", "rejected"]


@with_config(_OPEN)
class ReviewedAlert(AlertRecord):
    """An alert as the review book shows it: its record, and its review state."""

    thumbnail: NotRequired[str]
    decided_by: str | None
    decided_at: str | None  # ISO-8601 UTC
    note: str
    crop_url: str
    photo_url: str


@with_config(_OPEN)
class AlertCounts(TypedDict):
    """Alerts by review state; precision = confirmed of adjudicated (None before any)."""

    alerts: int
    confirmed: int
    rejected: int
    pending: int
    precision: float | None


@with_config(_OPEN)
class DeploymentCamera(AlertCounts):
    hours: float
    faces_scanned: int
    threshold: float
    threshold_how: str
    list_version: int
    snapshot_id: str
    threshold_at_end: NotRequired[float]
    threshold_at_end_how: NotRequired[str]


@with_config(_OPEN)
class DeploymentTotals(AlertCounts):
    hours: float
    faces_scanned: int
    alerts_not_on_frozen_snapshot: int
    alerts_deleted_since_end: int


@with_config(_OPEN)
class DeploymentAlert(TypedDict):
    camera_id: str
    status: str
    snapshot_id: str


@with_config(_OPEN)
class DeploymentSummary(TypedDict):
    """A deployment's numbers, from the review book and the scanned-faces counter."""

    computed_at: str
    totals: DeploymentTotals
    per_camera: dict[str, DeploymentCamera]
    alerts: dict[str, DeploymentAlert]


@with_config(_OPEN)
class DeploymentReport(DeploymentSummary):
    """The post-deployment report (``Deployments.report``; JSON and HTML)."""

    deployment_id: str
    purpose: str
    location: str
    list: str
    list_version: int
    snapshot_id: str
    started_at: str
    started_by: str
    ended_at: str | None
    ended_by: str | None
    status: Literal["running", "ended"]
    cameras: dict[str, dict[str, Any]]
    summary_at_end: DeploymentSummary | None
