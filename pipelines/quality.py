"""Quality gates before embedding: size, detector score, pose and blur.

Every rejected face carries its reason; nothing is dropped silently. Reasons, checked in
this order (a face gets the first that applies): ``small``, ``low_score``, ``pose``, ``blur``.

Pose is estimated from the five landmarks alone. After removing roll (the eye line's
angle), yaw follows from how far the nose tip sits from the eyes' midpoint, relative to
half the eye distance, with the nose tip about 1.1 half-eye-distances in front of the
eye plane on an average head; pitch follows from where the nose sits between the eye line
and the mouth line (about 0.45 of the way down on a frontal face).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.config import QualityConfig
from pipelines.schemas import FaceDetections, Quality

NOSE_DEPTH = 1.1  # nose-tip depth in half-eye-distances
FRONTAL_NOSE_RATIO = 0.45  # nose tip between eye line (0) and mouth line (1)
BLUR_SIZE = 112  # chips are resized to this before measuring blur, so sizes compare

_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def estimate_pose(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(yaw, pitch, roll) in degrees for (N, 5, 2) landmarks."""
    lm = np.asarray(landmarks, np.float64)
    if len(lm) == 0:
        z = np.zeros(0, np.float32)
        return z, z, z
    eye_l, eye_r, nose = lm[:, 0], lm[:, 1], lm[:, 2]
    mouth = (lm[:, 3] + lm[:, 4]) / 2
    eye_mid = (eye_l + eye_r) / 2
    d = eye_r - eye_l
    roll = np.arctan2(d[:, 1], d[:, 0])
    half = np.maximum(np.linalg.norm(d, axis=1) / 2, 1e-6)
    c, s = np.cos(-roll), np.sin(-roll)

    def derotate(v: np.ndarray) -> np.ndarray:
        return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], axis=1)

    nose_v = derotate(nose - eye_mid)
    mouth_v = derotate(mouth - eye_mid)
    yaw = np.degrees(np.arctan(nose_v[:, 0] / half / NOSE_DEPTH))
    ratio = nose_v[:, 1] / np.maximum(mouth_v[:, 1], 1e-6)
    pitch = np.degrees(np.arctan((ratio - FRONTAL_NOSE_RATIO) * 2.0 / NOSE_DEPTH))
    pitch = np.where(mouth_v[:, 1] <= 0, 90.0, pitch)  # mouth above the eyes: upside down
    return yaw.astype(np.float32), pitch.astype(np.float32), np.degrees(roll).astype(np.float32)


def laplacian_variance(chips: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of each chip's grey image, at a fixed resolution."""
    if len(chips) == 0:
        return np.zeros(0, np.float32)
    x = torch.from_numpy(np.asarray(chips).astype(np.float32))  # a copy: chips may be read-only
    grey = (x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114).unsqueeze(1)
    if grey.shape[-1] != BLUR_SIZE:
        grey = F.interpolate(grey, size=(BLUR_SIZE, BLUR_SIZE), mode="bilinear")
    lap = F.conv2d(grey, _LAPLACE)
    return lap.flatten(1).var(dim=1).numpy().astype(np.float32)


class QualityGate:
    def __init__(self, config: QualityConfig | None = None):
        self.config = config or QualityConfig()

    def borderline(self, q: Quality, i: int) -> list[str]:
        """The gates face ``i`` passed only just (within a quarter of the limit): an
        enrolment photo like that will be found less often than a clear one."""
        cfg = self.config
        near = {
            "small": q.eye_distance[i] < 1.5 * cfg.min_eye_distance,
            "blur": q.blur[i] < 1.5 * cfg.min_blur,
            "pose": max(abs(q.yaw[i]) / cfg.max_yaw, abs(q.pitch[i]) / cfg.max_pitch) > 0.75,
            "low_score": q.score[i] < cfg.min_score + 0.25 * (1 - cfg.min_score),
        }
        return [name for name, hit in near.items() if hit]

    def assess(self, detections: FaceDetections, chips: np.ndarray) -> Quality:
        cfg = self.config
        n = len(detections)
        eye = detections.eye_distance.astype(np.float32)
        yaw, pitch, _ = estimate_pose(detections.landmarks)
        blur = laplacian_variance(chips)
        score = detections.scores.astype(np.float32)
        reason = np.full(n, "", dtype=object)
        checks = [
            ("small", eye < cfg.min_eye_distance),
            ("low_score", score < cfg.min_score),
            ("pose", (np.abs(yaw) > cfg.max_yaw) | (np.abs(pitch) > cfg.max_pitch)),
            ("blur", blur < cfg.min_blur),
        ]
        for name, bad in reversed(checks):  # first listed wins
            reason[bad] = name
        return Quality(
            passed=reason == "",
            reason=reason,
            eye_distance=eye,
            blur=blur,
            yaw=yaw,
            pitch=pitch,
            score=score,
        )
