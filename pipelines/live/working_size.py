"""Live frames are decoded once, at the detector's working size, and mapped back.

A camera's frame is decoded in the hub and then crosses Ray to a pool replica. A 1080p
frame is 6.2 MB of pixels; decoding it whole costs the hub a full-size JPEG or video decode,
its transfer pickles every pixel, and the detector then shrinks it again. So the hub
decodes each frame to at most ``live.decode_max_side`` pixels on its longer side (JPEG in
the DCT itself, PIL's ``draft``: 1/2, 1/4 or 1/8 of the work; video by the decoder's
scaler) and never holds or ships the full frame.

The pool then finds faces, checks their quality and embeds them in working pixels (the
embedder's chip comes from the pixels the pool has, so the quality gates judge what it
sees). The hub maps boxes and landmarks back to the original frame's pixels
(``in_original``) before tracking and alerts, so what an officer is shown, and what is
stored, is in the camera's own coordinates. The region search of the next frame uses the
working-pixel boxes, as the pool knows no other.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from pipelines.images import working_size
from pipelines.schemas import FaceBatch

__all__ = ["UNSCALED", "Scale", "in_original", "scale_between", "working_size"]

Scale = tuple[float, float]  # (sx, sy): original pixels per working pixel
UNSCALED: Scale = (1.0, 1.0)


def scale_between(original: tuple[int, int], working: tuple[int, int]) -> Scale:
    """Original pixels per working pixel, per axis, for sizes given as (width, height)."""
    return original[0] / working[0], original[1] / working[1]


def in_original(batch: FaceBatch, scale: Scale) -> FaceBatch:
    """The batch with boxes and landmarks in original-frame pixels (a new batch; the one
    given is left as it is). Crops, scores, verdicts and embeddings are unchanged."""
    if scale == UNSCALED or len(batch.detections) == 0:
        return batch
    sx, sy = scale
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
        raise ValueError(f"bad frame scale {scale}")
    dets = batch.detections
    factor = np.asarray([sx, sy], np.float32)
    boxes = (dets.boxes.reshape(-1, 2, 2) * factor).reshape(-1, 4)
    landmarks = dets.landmarks * factor
    moved = dataclasses.replace(dets, boxes=boxes, landmarks=landmarks)
    return dataclasses.replace(batch, detections=moved)
