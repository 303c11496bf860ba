"""Face detection with facenet-pytorch's MTCNN, batched over frames.

Frames of equal size go through MTCNN as one batch. Frames whose longer side exceeds
``max_side`` are downscaled first, with the minimum face size scaled to match, and the
boxes and landmarks are mapped back to original-frame pixels.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.config import DetectorConfig
from pipelines.images import ImageError
from pipelines.schemas import FaceDetections

logger = logging.getLogger(__name__)

MTCNN_MIN_SIZE = 12  # P-net's receptive field: MTCNN cannot look for smaller faces


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
        self._mtcnn = None

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
        batch = batch.permute(0, 3, 1, 2).float().contiguous()
        if scale < 1.0:
            batch = F.interpolate(batch, size=(sh, sw), mode="area")
        # MTCNN wants (N, H, W, C) and permutes it to (N, C, H, W): hand it that view of a
        # planar tensor, so its pyramid and crop resizing (area interpolation) run on planar
        # memory, two to three times faster on CPU than on interleaved RGB. Same numbers.
        batch = batch.permute(0, 2, 3, 1)
        self._mtcnn.min_face_size = minsize
        boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
        return self._collect(idx, boxes, probs, points, 1.0 / scale)

    def _collect(self, idx, boxes, probs, points, inv_scale: float) -> FaceDetections:
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
