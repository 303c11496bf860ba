"""Face detection with facenet-pytorch's MTCNN, batched over frames.

Frames of equal size go through MTCNN as one batch. Frames whose longer side exceeds
``max_side`` are downscaled first, with the minimum face size scaled to match, and the
boxes and landmarks are mapped back to original-frame pixels.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.config import DetectorConfig
from pipelines.images import ImageError
from pipelines.schemas import FaceDetections
from pipelines.track import iou_matrix

logger = logging.getLogger(__name__)

MTCNN_MIN_SIZE = 12  # P-net's receptive field: MTCNN cannot look for smaller faces
# Region re-detection (``detect_regions``): a square this many face widths across, centred
# on where a face was, resized to REGION_SIDE pixels (the face then spans about 64 px, more
# than O-net's 48 px input). Faces from half to over twice the old size are found there.
REGION_FACES = 3.0
REGION_SIDE = 192
REGION_MIN_FACE = 32  # REGION_SIDE pixels: half the expected face
REGION_NMS_IOU = 0.5  # overlapping regions find the same face twice: keep the likelier


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device")
    return torch.device(device)


class FaceDetector:
    """MTCNN from the facenet-pytorch wheel (its weights ship inside the wheel)."""

    def __init__(self, config: DetectorConfig | None = None, device: str = "auto"):
        self.config = config or DetectorConfig()
        self.device = resolve_device(device)
        self._mtcnn: Any = None  # facenet_pytorch.MTCNN, once loaded

    def load(self) -> FaceDetector:
        if self._mtcnn is None:
            from facenet_pytorch import MTCNN

            self._mtcnn = MTCNN(
                keep_all=True,
                min_face_size=MTCNN_MIN_SIZE,  # set per call, see _detect_group
                thresholds=list(self.config.thresholds),
                post_process=False,
                device=self.device,
            ).eval()
            # Same numbers, about a third less time on CPU: torch's max-pool kernel is
            # several times faster on channels-last tensors (0.2 ms against 2.5 ms for an
            # R-net batch), and MTCNN pools after nearly every convolution.
            for net in (self._mtcnn.pnet, self._mtcnn.rnet, self._mtcnn.onet):
                net.to(memory_format=torch.channels_last)
        return self

    def _scale_for(self, h: int, w: int) -> float:
        return min(1.0, self.config.max_side / float(max(h, w)))

    def whole_pixels(self, h: int, w: int) -> float:
        """P-net's input pixels at the finest pyramid level of a whole-frame search of an
        h x w frame (the levels below add a fixed share, the same for regions)."""
        scale = self._scale_for(h, w)
        minsize = max(float(MTCNN_MIN_SIZE), self.config.min_face_size * scale)
        level = MTCNN_MIN_SIZE / minsize
        return (h * scale * level) * (w * scale * level)

    @staticmethod
    def region_pixels(n: int) -> float:
        """``whole_pixels`` for a region search around ``n`` faces (each a REGION_SIDE
        square with its smallest face REGION_MIN_FACE; see ``detect_regions``)."""
        level = MTCNN_MIN_SIZE / max(REGION_MIN_FACE, MTCNN_MIN_SIZE)
        return n * (REGION_SIDE * level) ** 2

    def _check(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ImageError(
                f"detector expects RGB uint8 (H, W, 3) frames, got {frame.dtype} {frame.shape}"
                " (use pipelines.images.to_rgb_array)"
            )
        pixels = frame.shape[0] * frame.shape[1]
        if pixels > self.config.max_pixels:
            raise ImageError(
                f"frame of {frame.shape[1]}x{frame.shape[0]} exceeds "
                f"{self.config.max_pixels:,} pixels"
            )

    def detect(self, frames: list[np.ndarray]) -> FaceDetections:
        """Find faces in every frame; row ``i`` belongs to frame ``frame_index[i]``."""
        self.load()
        for frame in frames:
            self._check(frame)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, frame in enumerate(frames):
            groups[frame.shape[:2]].append(i)
        parts = [self._detect_group(frames, idx) for idx in groups.values()]
        found = FaceDetections.concat(parts)
        order = np.argsort(found.frame_index, kind="stable")
        return found.select(order)

    @torch.inference_mode()
    def _detect_group(self, frames: list[np.ndarray], idx: list[int]) -> FaceDetections:
        h, w = frames[idx[0]].shape[:2]
        scale = self._scale_for(h, w)
        minsize = max(float(MTCNN_MIN_SIZE), self.config.min_face_size * scale)
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        if min(sh, sw) < minsize:
            return FaceDetections.empty()  # smaller than the smallest face we look for
        batch = torch.from_numpy(np.stack([frames[i] for i in idx])).to(self.device)
        # planar uint8 first, then float: half the time of converting the interleaved frame
        batch = batch.permute(0, 3, 1, 2).contiguous().float()
        if scale < 1.0:
            batch = F.interpolate(batch, size=(sh, sw), mode="area")
        # MTCNN wants (N, H, W, C) and permutes it to (N, C, H, W): hand it that view of a
        # planar tensor, so its pyramid and crop resizing (area interpolation) run on planar
        # memory, two to three times faster on CPU than on interleaved RGB. Same numbers.
        batch = batch.permute(0, 2, 3, 1)
        self._mtcnn.min_face_size = minsize
        from pipelines import mtcnn_stages  # facenet-pytorch: loaded with the model

        boxes, probs, points = mtcnn_stages.detect(self._mtcnn, batch)
        return self._collect(idx, boxes, probs, points, 1.0 / scale)

    @torch.inference_mode()
    def detect_regions(
        self, frames: list[np.ndarray], frame_index: np.ndarray, boxes: np.ndarray
    ) -> FaceDetections:
        """Find faces only near where faces were: around each ``boxes[k]`` in frame
        ``frame_index[k]``. A few milliseconds a face instead of a whole-frame pyramid.

        Each region is a square REGION_FACES face widths across, centred on the old box
        (parts outside the frame are black), resized to REGION_SIDE pixels; all regions go
        through MTCNN as one batch, and what it finds is mapped back to frame pixels.
        Faces found twice by overlapping regions are kept once. Row order: by frame.
        """
        self.load()
        if len(boxes) == 0:
            return FaceDetections.empty()
        for frame in frames:
            self._check(frame)
        side = REGION_FACES * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        side = np.maximum(side, REGION_FACES * self.config.min_face_size)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        origin = np.round(centre - side[:, None] / 2).astype(np.int64)
        side = np.round(side).astype(np.int64)
        crops = []
        for k in range(len(boxes)):
            crop = square_crop(frames[int(frame_index[k])], origin[k], int(side[k]))
            t = torch.from_numpy(crop).to(self.device).permute(2, 0, 1)[None].float()
            crops.append(F.interpolate(t, size=(REGION_SIDE, REGION_SIDE), mode="area"))
        batch = torch.cat(crops).permute(0, 2, 3, 1)  # planar memory, as in _detect_group
        # No smaller than the configured minimum face, in region pixels.
        scale = REGION_SIDE / side.astype(np.float32)
        self._mtcnn.min_face_size = float(
            max(REGION_MIN_FACE, MTCNN_MIN_SIZE, self.config.min_face_size * scale.min())
        )
        from pipelines import mtcnn_stages  # facenet-pytorch: loaded with the model

        found, probs, points = mtcnn_stages.detect(self._mtcnn, batch)
        parts = []
        for k in range(len(boxes)):
            if found[k] is None:
                continue
            b = np.asarray(found[k], np.float32).reshape(-1, 4) / scale[k]
            lm = np.asarray(points[k], np.float32).reshape(-1, 5, 2) / scale[k]
            b += np.tile(origin[k], 2).astype(np.float32)
            lm += origin[k].astype(np.float32)
            p = np.asarray(probs[k], np.float32).reshape(-1)
            keep = p >= self.config.min_score
            fi = np.full(int(keep.sum()), frame_index[k], np.int32)
            parts.append(FaceDetections(fi, b[keep], lm[keep], p[keep]))
        found_all = FaceDetections.concat(parts)
        keep = _nms_per_frame(found_all, REGION_NMS_IOU)
        return found_all.select(keep)

    def _collect(
        self, idx: Sequence[int], boxes: Any, probs: Any, points: Any, inv_scale: float
    ) -> FaceDetections:
        """MTCNN's per-frame answers (arrays, or None for a frame without faces)."""
        parts = []
        for j, frame_i in enumerate(idx):
            if boxes[j] is None:
                continue
            b = np.asarray(boxes[j], np.float32).reshape(-1, 4) * inv_scale
            p = np.asarray(probs[j], np.float32).reshape(-1)
            lm = np.asarray(points[j], np.float32).reshape(-1, 5, 2) * inv_scale
            keep = p >= self.config.min_score
            if keep.any():
                fi = np.full(int(keep.sum()), frame_i, np.int32)
                parts.append(FaceDetections(fi, b[keep], lm[keep], p[keep]))
        return FaceDetections.concat(parts)


def square_crop(frame: np.ndarray, origin: np.ndarray, side: int) -> np.ndarray:
    """``frame[y0:y0+side, x0:x0+side]``, black where the square leaves the frame."""
    h, w = frame.shape[:2]
    x0, y0 = int(origin[0]), int(origin[1])
    out = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return out


def _nms_per_frame(dets: FaceDetections, iou: float) -> np.ndarray:
    """Row indices to keep: per frame, greedily by score, dropping boxes that overlap a
    kept one by more than ``iou``. Kept rows come out ordered by frame."""
    keep: list[int] = []
    for f in np.unique(dets.frame_index):
        rows = np.flatnonzero(dets.frame_index == f)
        rows = rows[np.argsort(-dets.scores[rows], kind="stable")]
        kept: list[int] = []
        for r in rows:
            if not kept or iou_matrix(dets.boxes[[r]], dets.boxes[kept]).max() <= iou:
                kept.append(int(r))
        keep.extend(sorted(kept))
    return np.asarray(keep, np.int64)
