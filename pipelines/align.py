"""Face alignment: a least-squares similarity transform from five landmarks to a template.

Each embedder has its own chip size and template (five points in chip pixels, MTCNN order:
left eye, right eye, nose tip, left mouth corner, right mouth corner, image-left first).
The transform (rotation, uniform scale, translation; no reflection) is fitted with
Umeyama's closed form, optionally weighting the landmarks, then the chip is resampled
bilinearly. When the face is much larger
than the chip, the source region is first box-filtered down so the chip does not alias.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipelines.schemas import FaceDetections


def similarity_transform(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """The 2x3 matrix M minimising sum w_k |M @ [src_k, 1] - dst_k|^2 over similarities.

    ``src`` and ``dst`` are (K, 2), K >= 2. ``weights`` (K,), non-negative, default equal:
    how much each point counts (MTCNN's mouth corners move with expression, its eyes do not).
    Reflections are excluded.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need matching (K>=2, 2) point sets, got {src.shape} and {dst.shape}")
    w = _normalised_weights(weights, len(src))
    mu_s, mu_d = w @ src, w @ dst
    s0, d0 = src - mu_s, dst - mu_d
    var_s = w @ (s0**2).sum(1)
    if var_s <= 1e-12:
        raise ValueError("source points coincide; no transform is defined")
    cov = (d0 * w[:, None]).T @ s0
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def _normalised_weights(weights: np.ndarray | None, k: int) -> np.ndarray:
    if weights is None:
        return np.full(k, 1.0 / k)
    w = np.asarray(weights, np.float64)
    if w.shape != (k,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {k} non-negative numbers, not all zero; got {weights}")
    return np.asarray(w / w.sum())


def apply_transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    return np.asarray(pts @ m[:, :2].T + m[:, 2])


def invert_transform(m: np.ndarray) -> np.ndarray:
    a = m[:, :2]
    inv = np.linalg.inv(a)
    return np.hstack([inv, (-inv @ m[:, 2])[:, None]])


def transform_scale(m: np.ndarray) -> float:
    """Chip pixels per source pixel."""
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def warp_chip(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Resample ``image`` (H, W, 3 uint8) into a ``size`` square chip under ``m`` (image->chip).

    Pixels that fall outside the image are black, as in dlib's extract_image_chip.
    """
    h, w = image.shape[:2]
    inv = invert_transform(m)  # chip -> image
    corners = apply_transform(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]]))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return np.zeros((size, size, 3), np.uint8)
    region = Image.fromarray(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]))
    # Source pixels per chip pixel; pre-shrink with a box filter when it exceeds 1.5.
    factor = int(np.floor(1.0 / transform_scale(m)))
    if factor >= 2:
        region = region.reduce(factor)
    else:
        factor = 1
    # Map chip (u, v) -> region pixel coordinates (PIL samples at pixel centres).
    shift = np.array([[1, 0, -cx0], [0, 1, -cy0]], np.float64)
    to_region = np.vstack([shift, [0, 0, 1]]) @ np.vstack([inv, [0, 0, 1]])
    to_region[:2] /= factor
    # PIL's AFFINE maps output pixel (x, y) -> input (a x + b y + c, d x + e y + f) where both
    # use pixel corners as integer coordinates; our transforms use the same convention.
    coeffs = to_region[:2].reshape(-1)
    chip = region.transform(
        (size, size), Image.Transform.AFFINE, tuple(coeffs), resample=Image.Resampling.BILINEAR
    )
    return np.asarray(chip, np.uint8)


def scaled_template(template: np.ndarray, scale: float) -> np.ndarray:
    """``template`` scaled about its centre (> 1: the face fills more of the chip)."""
    centre = template.mean(axis=0)
    return np.asarray(centre + (template - centre) * scale)


def align_faces(
    frames: list[np.ndarray],
    detections: FaceDetections,
    template: np.ndarray,
    size: int,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Chips (N, size, size, 3) uint8 and transforms (N, 2, 3), one per detected face.

    ``weights``: per-landmark weights of the fit (see ``similarity_transform``).
    """
    n = len(detections)
    chips = np.zeros((n, size, size, 3), np.uint8)
    mats = np.zeros((n, 2, 3), np.float64)
    for i in range(n):
        m = similarity_transform(detections.landmarks[i], template, weights)
        mats[i] = m
        chips[i] = warp_chip(frames[int(detections.frame_index[i])], m, size)
    return chips, mats
