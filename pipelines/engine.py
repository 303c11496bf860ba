"""The face engine: detect, align, check quality, embed. Plain Python, no Ray.

Both the archive search (Ray Data) and live cameras (Ray Serve) run this same class inside
the shared model pool; tests run it directly on numpy frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipelines.align import align_faces, scaled_template
from pipelines.config import Settings
from pipelines.detect import FaceDetector, resolve_device
from pipelines.embedders.backends import build_embedder
from pipelines.errors import FacewatchError
from pipelines.images import ImageError, crop_thumbnail, load_image, sha256_file
from pipelines.quality import QualityGate
from pipelines.schemas import EmbedderInfo, FaceBatch, FaceDetections

logger = logging.getLogger(__name__)

# Test-time augmentation of photos: the template at these scales (> 1: the face fills more
# of the chip), each with its mirror. Chosen before measuring (benchmarks/bench_lfw.py).
PHOTO_SCALES = (0.96, 1.0, 1.04)
PHOTO_MODE = "tta6"  # recorded with each enrolled photo
# Between whole-frame searches, a frame with so many faces that their regions cost more
# than a whole search is searched whole (``FaceEngine._regions_cost_more``); a switch for
# benchmarks/archive_stages.py's A/B runs.
REGIONS_WHEN_CHEAPER = True


class EnrolmentError(FacewatchError, ValueError):
    """An enrolment image is unusable. ``problems`` maps each bad image to why."""

    def __init__(self, problems: dict[str, str]):
        self.problems = problems
        lines = [f"  {name}: {why}" for name, why in problems.items()]
        super().__init__("no one was enrolled; these images are unusable:\n" + "\n".join(lines))


@dataclass
class ProbeFace:
    """The single usable face of an enrolment or probe photo."""

    path: str
    sha256: str
    embedding: np.ndarray  # (D,) float32, L2-normalised
    thumbnail: np.ndarray  # small RGB crop
    quality_score: float
    borderline: tuple[str, ...] = ()  # quality gates it passed only just
    embedding_mode: str = "single"  # "single": one pass; "tta6": 3 scales x mirror


class FaceEngine:
    def __init__(self, settings: Settings | None = None, device: str | None = None):
        self.settings = settings or Settings()
        self.device = resolve_device(device or self.settings.pool.device)
        self.detector = FaceDetector(self.settings.detector, str(self.device))
        self.gate = QualityGate(self.settings.quality)
        self.embedder = build_embedder(self.settings.embedder, self.device)
        self._loaded = False

    @property
    def info(self) -> EmbedderInfo:
        return self.embedder.info

    def load(self, warmup: bool = True) -> FaceEngine:
        """Load both models once; a warm-up pass makes the first real call fast."""
        if self._loaded:
            return self
        t0 = time.perf_counter()
        self.detector.load()
        self.embedder.load()
        self._loaded = True
        if warmup:
            self.process([np.zeros((160, 160, 3), np.uint8)])
            size = self.embedder.chip_size
            self.embedder.embed(np.zeros((1, size, size, 3), np.uint8))
        logger.info(
            "face engine ready on %s: MTCNN + %s in %.1fs",
            self.device,
            self.info.key,
            time.perf_counter() - t0,
        )
        return self

    def process(
        self,
        frames: list[np.ndarray],
        with_crops: bool = False,
        whole: Sequence[bool] | None = None,
        before: FaceDetections | None = None,
        embed: bool = True,
    ) -> FaceBatch:
        """Faces, quality verdicts and embeddings for a batch of RGB uint8 frames.

        ``whole[i]`` False says frame i continues frame i-1 of the same video (for i = 0,
        the frame whose faces are ``before``): faces are then looked for only around the
        faces found there, which costs a fraction of a whole-frame search (see
        ``FaceDetector.detect_regions``). Default: every frame searched whole. ``embed``
        False: embeddings left zero, for a caller that embeds the faces its own way (photo
        TTA).
        """
        self.load(warmup=False)
        return self._faces(frames, self._detect(frames, whole, before), with_crops, embed)

    def process_regions(
        self,
        frames: list[np.ndarray],
        regions: Sequence[np.ndarray | None],
        with_crops: bool = False,
    ) -> FaceBatch:
        """Like ``process``, for frames of different cameras in one call: ``regions[i]``
        None searches frame i whole; an (n, 4) array of boxes searches it only around
        those boxes (``FaceDetector.detect_regions``, all such regions of all frames in
        one batch), unless so many boxes cost more than a whole search (then whole); an
        empty array finds no face in it at no cost."""
        self.load(warmup=False)
        return self._faces(frames, self.detect_regions(frames, regions), with_crops)

    def detect_regions(
        self, frames: list[np.ndarray], regions: Sequence[np.ndarray | None]
    ) -> FaceDetections:
        if len(regions) != len(frames):
            raise ValueError(f"{len(regions)} region sets for {len(frames)} frames")
        # a frame with so many faces that their regions cost more than a whole search is
        # searched whole, as between an archive search's whole frames (``_detect``)
        regions = [
            None if r is not None and self._regions_cost_more(frames[i], len(r)) else r
            for i, r in enumerate(regions)
        ]
        whole = [i for i, r in enumerate(regions) if r is None]
        parts = []
        if whole:
            found = self.detector.detect([frames[i] for i in whole])
            found.frame_index = np.asarray(whole, np.int32)[found.frame_index]
            parts.append(found)
        near = [
            (i, np.asarray(r, np.float32).reshape(-1, 4))
            for i, r in enumerate(regions)
            if r is not None
        ]
        near = [(i, r) for i, r in near if len(r)]
        if near:
            index = np.concatenate([np.full(len(r), i, np.int32) for i, r in near])
            boxes = np.concatenate([r for _, r in near])
            parts.append(self.detector.detect_regions(frames, index, boxes))
        dets = FaceDetections.concat(parts)
        return dets.select(np.argsort(dets.frame_index, kind="stable"))

    def _faces(
        self,
        frames: list[np.ndarray],
        dets: FaceDetections,
        with_crops: bool,
        embed: bool = True,
    ) -> FaceBatch:
        """Alignment, quality, embeddings (unless ``embed`` is False) and (optionally) crops
        of detected faces."""
        size = self.embedder.chip_size
        chips, _ = align_faces(
            frames, dets, self.embedder.template, size, self.embedder.template_weights
        )
        quality = self.gate.assess(dets, chips)
        emb = np.zeros((len(dets), self.info.dim), np.float32)
        if embed and quality.passed.any():
            emb[quality.passed] = self.embedder.embed(chips[quality.passed])
        crops = None
        if with_crops:
            crops = [
                crop_thumbnail(frames[int(f)], b)
                for f, b in zip(dets.frame_index, dets.boxes, strict=True)
            ]
        return FaceBatch(dets, quality, emb, self.info, len(frames), crops)

    def _detect(
        self,
        frames: list[np.ndarray],
        whole: Sequence[bool] | None,
        before: FaceDetections | None,
    ) -> FaceDetections:
        if whole is None or all(whole):
            return self.detector.detect(frames)
        if len(whole) != len(frames):
            raise ValueError(f"whole has {len(whole)} flags for {len(frames)} frames")
        whole = [bool(w) for w in whole]
        whole[0] = whole[0] or before is None  # nothing to follow: search it whole
        keys = np.flatnonzero(whole)
        found = self.detector.detect([frames[i] for i in keys])
        found.frame_index = keys[found.frame_index].astype(np.int32)
        parts, done = [found], set(keys.tolist())
        # Frames whose predecessor is known, a step at a time (each step is one batch).
        while len(done) < len(frames):
            ready = [i for i in range(len(frames)) if i not in done and (i == 0 or i - 1 in done)]
            index, boxes, costly = [], [], []
            for i in ready:
                prev = before if i == 0 and before is not None else _faces_of(parts, i - 1)
                if self._regions_cost_more(frames[i], len(prev)):
                    costly.append(i)
                    continue
                index += [i] * len(prev)
                boxes.append(prev.boxes)
            if costly:  # many faces: one whole-frame search is cheaper than their regions
                part = self.detector.detect([frames[i] for i in costly])
                part.frame_index = np.asarray(costly, np.int32)[part.frame_index]
                parts.append(part)
            if boxes:
                parts.append(
                    self.detector.detect_regions(
                        frames, np.asarray(index, np.int32), np.concatenate(boxes).reshape(-1, 4)
                    )
                )
            done.update(ready)
        dets = FaceDetections.concat(parts)
        return dets.select(np.argsort(dets.frame_index, kind="stable"))

    def _regions_cost_more(self, frame: np.ndarray, n_faces: int) -> bool:
        """Whether looking around ``n_faces`` faces costs more than searching ``frame``
        whole (P-net's input pixels, the bulk of MTCNN's work; measured in
        benchmarks/archive_stages.py: a crowded 640x360 clip's region frames cost twice
        its whole ones). A whole search also finds faces new in the frame."""
        if not REGIONS_WHEN_CHEAPER:
            return False
        h, w = frame.shape[:2]
        whole = self.detector.whole_pixels(h, w)
        return whole > 0 and self.detector.region_pixels(n_faces) >= whole

    def probe_face(self, path: Path | str) -> ProbeFace:
        """The one quality-passing face in a photo, or ImageError saying why not."""
        path = Path(path)
        image = load_image(path, self.settings.detector.max_pixels)
        face = self.probe_images([image])[0]
        if isinstance(face, str):
            raise ImageError(f"{path}: {face}")
        face.path, face.sha256 = str(path), sha256_file(path)
        return face

    def probe_images(self, images: list[np.ndarray]) -> list[ProbeFace | str]:
        """Per decoded photo, its one quality-passing face (``path`` and ``sha256`` left
        for the caller), or why it has none. Detection runs as one batch (MTCNN batches
        photos of one size), and the photo TTA's network passes of all photos together."""
        if not images:
            return []
        tta = self.settings.embedder.photo_tta
        batch = self.process(images, with_crops=True, embed=not tta)  # TTA embeds anew
        out: list[ProbeFace | str] = []
        chosen: list[int] = []
        for k in range(len(images)):
            rows = np.flatnonzero(batch.detections.frame_index == k)
            ok = rows[batch.passed[rows]]
            if len(rows) == 0:
                out.append("no face found")
            elif len(ok) == 0:
                why = ", ".join(sorted(set(batch.quality.reason[rows].astype(str))))
                out.append(f"{len(rows)} face(s) found, none passes quality ({why})")
            elif len(ok) > 1:
                out.append(f"{len(ok)} usable faces; a photo must show exactly one")
            else:
                chosen.append(int(ok[0]))
                out.append(self._probe(batch, int(ok[0])))
        if tta and chosen:
            faces = batch.detections.select(np.asarray(chosen))
            embeddings = self.photo_embeddings([images[int(k)] for k in faces.frame_index], faces)
            done = [f for f in out if isinstance(f, ProbeFace)]
            for face, embedding in zip(done, embeddings, strict=True):
                face.embedding, face.embedding_mode = embedding, PHOTO_MODE
        return out

    def _probe(self, batch: FaceBatch, i: int) -> ProbeFace:
        return ProbeFace(
            path="",
            sha256="",
            embedding=batch.embeddings[i],
            thumbnail=_crops(batch)[i],
            quality_score=float(batch.quality.quality_score[i]),
            borderline=tuple(self.gate.borderline(batch.quality, i)),
        )

    def photo_embedding(self, image: np.ndarray, face: FaceDetections) -> np.ndarray:
        """The embedding of one photo's face with test-time augmentation: the chip at
        ``PHOTO_SCALES`` of the template, each with its mirror image (6 passes). Photos are
        few and their faces are what every video face is compared with, so the extra passes
        cost little and steady the embedding (LFW: 98.97% against 98.40% plain, bench_lfw)."""
        return np.asarray(self.photo_embeddings([image], face)[0])

    def photo_embeddings(self, images: list[np.ndarray], faces: FaceDetections) -> np.ndarray:
        """``photo_embedding`` of face i in ``images[i]``, for all faces at once: (N, D)."""
        faces = faces.select(np.arange(len(faces)))
        faces.frame_index = np.arange(len(faces), dtype=np.int32)
        views = [
            align_faces(
                images,
                faces,
                scaled_template(self.embedder.template, scale),
                self.embedder.chip_size,
                self.embedder.template_weights,
            )[0]
            for scale in PHOTO_SCALES
        ]
        return self.embedder.embed_views_many(np.stack(views, axis=1))

    def probe_faces(self, paths: Sequence[Path | str]) -> list[ProbeFace]:
        """All photos' faces, or EnrolmentError naming every bad photo (all or nothing)."""
        faces, problems = [], {}
        for p in paths:
            try:
                faces.append(self.probe_face(p))
            except ImageError as exc:
                problems[str(p)] = str(exc).removeprefix(f"{p}: ")
        if problems:
            raise EnrolmentError(problems)
        return faces


def _crops(batch: FaceBatch) -> list[np.ndarray]:
    if batch.crops is None:
        raise ValueError("the batch was detected without crops")
    return batch.crops


def _faces_of(parts: list[FaceDetections], frame: int) -> FaceDetections:
    return FaceDetections.concat([p.select(p.frame_index == frame) for p in parts])


def set_torch_threads(n: int) -> None:
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
