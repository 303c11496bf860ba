"""One face per image, through the production pipeline, for identification evaluations.

Every image of an evaluation set is a search: its largest detected face is aligned to the
embedder's template, assessed by the quality gates and embedded. The embedding is computed
even when a gate rejects the face, so that the effect of the gates can be measured; the
verdict is kept beside it and ``usable`` applies it. An image with no face has status
``no_face`` and a zero embedding.

Folders use the ``DIR/<identity>/<images>`` layout (LFW and the CelebA subset have it).
Results can be saved to and loaded from ``.npz`` (plain arrays, no pickle).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.align import align_faces
from pipelines.detect import FaceDetector
from pipelines.embedders.base import Embedder
from pipelines.engine import FaceEngine
from pipelines.images import load_image
from pipelines.quality import QualityGate
from pipelines.schemas import FaceDetections

ProgressFn = Callable[[str, int, int], None]  # (stage, items done so far, total items)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
NO_FACE = "no_face"


def identity_images(root: Path | str) -> dict[str, list[Path]]:
    """``{identity: sorted image paths}`` for ``root/<identity>/<images>``; sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    out: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if images:
            out[folder.name] = images
    if not out:
        raise ValueError(f"{root}: no <identity>/<image> files found (expected DIR/<id>/<img>)")
    return out


@dataclass
class ImageFaces:
    """Row i describes ``paths[i]``: its largest face, verdict and embedding."""

    paths: np.ndarray  # (N,) str
    found: np.ndarray  # (N,) bool
    boxes: np.ndarray  # (N, 4) float32; zeros where no face
    landmarks: np.ndarray  # (N, 5, 2) float32
    det_score: np.ndarray  # (N,) float32
    reason: np.ndarray  # (N,) str: "" usable, "no_face", or the quality gate's reason
    embeddings: np.ndarray  # (N, D) float32 L2-normalised; zeros where no face

    def __len__(self) -> int:
        return len(self.paths)

    def usable(self, gates: bool = True) -> np.ndarray:
        """Faces that would be searched: found, and passing the gates when ``gates``."""
        return (self.reason == "") if gates else self.found.copy()

    def select(self, rows: np.ndarray) -> ImageFaces:
        return ImageFaces(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def save(self, path: Path | str, **meta: np.ndarray | str) -> None:
        arrays: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        arrays["paths"] = arrays["paths"].astype(str)
        arrays["reason"] = arrays["reason"].astype(str)
        arrays.update({f"meta_{k}": np.asarray(v) for k, v in meta.items()})
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path | str) -> tuple[ImageFaces, dict[str, np.ndarray]]:
        with np.load(path, allow_pickle=False) as z:
            faces = cls(**{f.name: z[f.name] for f in fields(cls)})
            meta = {k[5:]: z[k] for k in z.files if k.startswith("meta_")}
        return faces, meta

    @classmethod
    def concat(cls, parts: Sequence[ImageFaces]) -> ImageFaces:
        names = [f.name for f in fields(cls)]
        return cls(**{n: np.concatenate([getattr(p, n) for p in parts]) for n in names})


def largest_faces(dets: FaceDetections, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the row of its largest detected face (by box area), and whether any."""
    rows = np.full(n_frames, -1, np.int64)
    area = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
    best = np.full(n_frames, -np.inf)
    for i, f in enumerate(dets.frame_index):
        if area[i] > best[f]:
            best[f], rows[f] = area[i], i
    return rows, rows >= 0


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def extract_faces(
    detector: FaceDetector,
    embedder: Embedder,
    gate: QualityGate,
    paths: Sequence[Path],
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> ImageFaces:
    """Detect, align, assess and embed the largest face of every image, in batches."""
    parts = []
    for sl in _chunks(len(paths), batch_size):
        frames = [load_image(p) for p in paths[sl]]
        dets = detector.detect(frames)
        rows, found = largest_faces(dets, len(frames))
        parts.append(_embed_batch(frames, paths[sl], dets, rows, found, embedder, gate))
        if progress:
            progress("faces", sl.stop, len(paths))
    if not parts:
        return _empty(embedder.info.dim)
    return ImageFaces.concat(parts)


def _embed_batch(
    frames: list[np.ndarray],
    paths: Sequence[Path],
    dets: FaceDetections,
    rows: np.ndarray,
    found: np.ndarray,
    embedder: Embedder,
    gate: QualityGate,
) -> ImageFaces:
    out = _blank(paths, embedder.info.dim)
    out.found[:] = found
    chosen = dets.select(rows[found])
    out.boxes[found], out.landmarks[found], out.det_score[found] = (
        chosen.boxes,
        chosen.landmarks,
        chosen.scores,
    )
    out.reason[:] = NO_FACE
    if len(chosen):
        weights = getattr(embedder, "template_weights", None)
        chips, _ = align_faces(frames, chosen, embedder.template, embedder.chip_size, weights)
        verdict = gate.assess(chosen, chips)
        out.reason[found] = verdict.reason.astype(str)
        out.embeddings[found] = embedder.embed(chips)
    return out


def _blank(paths: Sequence[Path], dim: int) -> ImageFaces:
    n = len(paths)
    return ImageFaces(
        paths=np.array([str(p) for p in paths], dtype=object).astype(str),
        found=np.zeros(n, bool),
        boxes=np.zeros((n, 4), np.float32),
        landmarks=np.zeros((n, 5, 2), np.float32),
        det_score=np.zeros(n, np.float32),
        reason=np.full(n, NO_FACE, dtype="<U16"),
        embeddings=np.zeros((n, dim), np.float32),
    )


def _empty(dim: int) -> ImageFaces:
    return _blank([], dim)


def reembed(
    faces: ImageFaces,
    embedder: Embedder,
    template: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> np.ndarray:
    """Embeddings of the same faces aligned to another ``template`` (no detection again).

    The embedder's own settings apply (e.g. ``flip_average``). Rows without a face are zero.
    Without ``template``, the embedder's own template and landmark weights are used.
    """
    if template is None:
        template, weights = embedder.template, getattr(embedder, "template_weights", None)
    out = np.zeros((len(faces), embedder.info.dim), np.float32)
    idx = np.flatnonzero(faces.found)
    for sl in _chunks(len(idx), batch_size):
        rows = idx[sl]
        frames = [load_image(p) for p in faces.paths[rows]]
        dets = FaceDetections(
            np.arange(len(rows), dtype=np.int32),
            faces.boxes[rows],
            faces.landmarks[rows],
            faces.det_score[rows],
        )
        chips, _ = align_faces(frames, dets, template, embedder.chip_size, weights)
        out[rows] = embedder.embed(chips)
        if progress:
            progress("re-embed", sl.stop, len(idx))
    return out


def photo_embeddings(faces: ImageFaces, rows: np.ndarray, engine: FaceEngine) -> np.ndarray:
    """The faces of ``rows`` embedded as enrolment embeds a photo (``FaceEngine.probe_face``:
    with test-time augmentation when ``photo_tta`` is on), from the cached detections."""
    out = np.zeros((len(rows), engine.info.dim), np.float32)
    for k, r in enumerate(rows):
        if not engine.settings.embedder.photo_tta:
            out[k] = faces.embeddings[r]
            continue
        det = FaceDetections(
            np.zeros(1, np.int32), faces.boxes[r : r + 1], faces.landmarks[r : r + 1],
            faces.det_score[r : r + 1],
        )  # fmt: skip
        out[k] = engine.photo_embedding(load_image(faces.paths[r]), det)
    return out
