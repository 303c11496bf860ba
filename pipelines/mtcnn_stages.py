"""MTCNN's three stages, with R-net's and O-net's inputs cut out and resized in batches.

facenet-pytorch's ``detect_face`` resizes every candidate box for R-net (24 px) and O-net
(48 px) with its own ``interpolate(mode="area")`` call. A whole live frame has about a
hundred candidates, and cutting and resizing them was about a fifth of MTCNN's time on CPU
(benchmarks/bench_live_stages.py).

Here the candidates up to BATCHED_SIDE pixels are grouped by size, and each group is cut
out with one gather and
area-averaged with two batched matrix products. Area interpolation is an average over
fixed integer bins (torch's adaptive average pooling), so it is the product
``A_rows @ crop @ A_cols.T`` with 0/1 bin matrices scaled by each bin's length: the same
numbers as the per-box calls, to float rounding. P-net, the networks, the thresholds and
the non-maximum suppression are facenet-pytorch's own, called unchanged.

``detect`` returns what ``facenet_pytorch.MTCNN.detect(..., landmarks=True)`` returns for a
batch: per image, boxes (largest first), probabilities and landmarks, or None.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import (
    batched_nms,
    batched_nms_numpy,
    bbreg,
    fixed_batch_process,
    generateBoundingBox,
    imresample,
    pad,
    rerec,
)

# Candidates whose sides are within this factor of the smallest in their group are cut out
# together, padded to the group's largest: at most 1.3^2 of the pixels are padding.
GROUP_RATIO = 1.3
BATCHED_SIDE = 64


def _bin_matrix(lengths: torch.Tensor, padded: int, out: int) -> torch.Tensor:
    """(K, out, padded): row ``i`` of matrix ``k`` averages input positions
    ``[floor(i*L/out), ceil((i+1)*L/out))`` of a length-``L = lengths[k]`` input, as torch's
    adaptive average pooling (``interpolate(mode="area")``) does. Padding gets weight 0."""
    i = torch.arange(out, device=lengths.device)
    length = lengths[:, None]
    start = (i * length) // out
    end = ((i + 1) * length + out - 1) // out
    pos = torch.arange(padded, device=lengths.device)
    inside = (pos[None, None, :] >= start[..., None]) & (pos[None, None, :] < end[..., None])
    return inside.to(torch.float32) / (end - start).to(torch.float32)[..., None]


def crop_resize(
    imgs: torch.Tensor,
    image_inds: torch.Tensor,
    y0: np.ndarray,
    y1: np.ndarray,
    x0: np.ndarray,
    x1: np.ndarray,
    size: int,
) -> torch.Tensor:
    """``imgs[image_inds[k], :, y0[k]:y1[k], x0[k]:x1[k]]`` resized to ``size`` x ``size``
    by area averaging, for every k, as (K, C, size, size). Every box must be non-empty.

    Boxes up to BATCHED_SIDE pixels go in groups; larger ones, where the matrix products'
    ``size`` multiplications per pixel cost more than a call, one at a time as upstream."""
    n_boxes = len(y0)
    _, channels, height, width = imgs.shape
    out = torch.empty((n_boxes, channels, size, size), dtype=imgs.dtype, device=imgs.device)
    if n_boxes == 0:
        return out
    heights, widths = y1 - y0, x1 - x0
    sides = np.maximum(heights, widths)
    inds_np = image_inds.cpu().numpy()
    for k in np.flatnonzero(sides > BATCHED_SIDE):
        crop = imgs[int(inds_np[k]), :, y0[k] : y1[k], x0[k] : x1[k]]
        out[k] = imresample(crop[None], (size, size))[0]
    small = np.flatnonzero(sides <= BATCHED_SIDE)
    order = small[np.argsort(sides[small], kind="stable")]
    # One gather per group from the batch's own memory (N, C, H, W), not a copy of it:
    # position ((n * C + c) * H + y) * W + x.
    flat = imgs.contiguous().reshape(-1)
    plane = np.arange(channels)[:, None, None, None] * (height * width)
    start = 0
    while start < len(order):
        limit = sides[order[start]] * GROUP_RATIO
        stop = start + 1
        while stop < len(order) and sides[order[stop]] <= limit:
            stop += 1
        g = order[start:stop]
        start = stop
        hp, wp = int(heights[g].max()), int(widths[g].max())
        # Rows and columns past a box's own size are clamped into the image and then
        # weighted 0 by the bin matrices.
        rows = np.minimum(y0[g][:, None] + np.arange(hp)[None, :], height - 1)
        cols = np.minimum(x0[g][:, None] + np.arange(wp)[None, :], width - 1)
        pixel = inds_np[g][:, None, None] * (channels * height * width)
        pixel = pixel + rows[:, :, None] * width + cols[:, None, :]
        index = torch.from_numpy((plane + pixel[None]).reshape(-1)).to(imgs.device)
        crops = flat.index_select(0, index).reshape(channels, len(g), hp, wp)
        a_rows = _bin_matrix(torch.from_numpy(heights[g]).to(imgs.device), hp, size)
        a_cols = _bin_matrix(torch.from_numpy(widths[g]).to(imgs.device), wp, size)
        # (C, G, hp, wp) @ (G, wp, size) -> (C, G, hp, size); then rows
        resized = a_rows @ (crops @ a_cols.transpose(1, 2))
        out[torch.from_numpy(g).to(imgs.device)] = resized.permute(1, 0, 2, 3).to(imgs.dtype)
    return out


def cut_candidates(
    imgs: torch.Tensor, boxes: torch.Tensor, image_inds: torch.Tensor, size: int
) -> Any:
    """The candidates' pixels at ``size``, normalised as MTCNN wants, and which boxes had
    any (a box wholly outside the image has none and is dropped)."""
    h, w = imgs.shape[2:4]
    y, ey, x, ex = pad(boxes, w, h)  # 1-based, clipped to the image
    keep = (ey > y - 1) & (ex > x - 1)
    keep_t = torch.from_numpy(keep).to(boxes.device)
    data = crop_resize(imgs, image_inds[keep_t], y[keep] - 1, ey[keep], x[keep] - 1, ex[keep], size)
    return (data - 127.5) * 0.0078125, keep_t


@torch.inference_mode()
def detect(mtcnn: Any, batch: torch.Tensor) -> tuple[Any, Any, Any]:
    """Faces in a (N, H, W, 3) float batch with ``mtcnn``'s networks, thresholds,
    pyramid factor and ``min_face_size``; see the module docstring for the return."""
    imgs = batch.permute(0, 3, 1, 2).type(next(mtcnn.pnet.parameters()).dtype)
    boxes, image_inds = _pnet_stage(mtcnn, imgs)
    boxes, image_inds = _rnet_stage(mtcnn, imgs, boxes, image_inds)
    boxes, image_inds, points = _onet_stage(mtcnn, imgs, boxes, image_inds)
    return _per_image(len(imgs), boxes, image_inds, points)


def _pnet_stage(mtcnn: Any, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """P-net over the image pyramid, as facenet-pytorch runs it: candidate boxes (x1, y1,
    x2, y2, score), squared, and the image each belongs to."""
    h, w = imgs.shape[2:4]
    scale = 12.0 / mtcnn.min_face_size
    shortest = min(h, w) * scale
    scales = []
    while shortest >= 12:
        scales.append(scale)
        scale *= mtcnn.factor
        shortest *= mtcnn.factor
    boxes_l, inds_l, picks_l = [], [], []
    offset = 0
    for scale in scales:
        data = imresample(imgs, (int(h * scale + 1), int(w * scale + 1)))
        reg, probs = mtcnn.pnet((data - 127.5) * 0.0078125)
        boxes_s, inds_s = generateBoundingBox(reg, probs[:, 1], scale, mtcnn.thresholds[0])
        boxes_l.append(boxes_s)
        inds_l.append(inds_s)
        picks_l.append(batched_nms(boxes_s[:, :4], boxes_s[:, 4], inds_s, 0.5) + offset)
        offset += boxes_s.shape[0]
    picks = torch.cat(picks_l)
    boxes, image_inds = torch.cat(boxes_l)[picks], torch.cat(inds_l)[picks]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    regw = boxes[:, 2] - boxes[:, 0]
    regh = boxes[:, 3] - boxes[:, 1]
    moved = [boxes[:, k] + boxes[:, k + 5] * (regw if k % 2 == 0 else regh) for k in range(4)]
    return rerec(torch.stack([*moved, boxes[:, 4]]).permute(1, 0)), image_inds


def _rnet_stage(
    mtcnn: Any, imgs: torch.Tensor, boxes: torch.Tensor, image_inds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """R-net on the candidates at 24 px: those that pass, moved and squared."""
    if len(boxes) > 0:
        data, keep = cut_candidates(imgs, boxes, image_inds, 24)
        boxes, image_inds = boxes[keep], image_inds[keep]
    if len(boxes) == 0:
        return boxes, image_inds
    out = fixed_batch_process(data, mtcnn.rnet)
    score = out[1][:, 1]
    passed = score > mtcnn.thresholds[1]
    boxes = torch.cat((boxes[passed, :4], score[passed].unsqueeze(1)), dim=1)
    image_inds = image_inds[passed]
    moves = out[0][passed]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds, moves = boxes[pick], image_inds[pick], moves[pick]
    return rerec(bbreg(boxes, moves)), image_inds


def _onet_stage(
    mtcnn: Any, imgs: torch.Tensor, boxes: torch.Tensor, image_inds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """O-net on the candidates at 48 px: the faces, their landmarks (N, 5, 2) and images."""
    points = torch.zeros(0, 5, 2, device=imgs.device)
    if len(boxes) > 0:
        data, keep = cut_candidates(imgs, boxes, image_inds, 48)
        boxes, image_inds = boxes[keep], image_inds[keep]
    if len(boxes) == 0:
        return boxes, image_inds, points
    out = fixed_batch_process(data, mtcnn.onet)
    score = out[2][:, 1]
    passed = score > mtcnn.thresholds[2]
    marks = out[1][passed]
    boxes = torch.cat((boxes[passed, :4], score[passed].unsqueeze(1)), dim=1)
    image_inds = image_inds[passed]
    moves = out[0][passed]
    box_w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    box_h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    points_x = box_w * marks[:, :5] + boxes[:, 0:1] - 1
    points_y = box_h * marks[:, 5:10] + boxes[:, 1:2] - 1
    points = torch.stack((points_x, points_y), dim=2)
    boxes = bbreg(boxes, moves)
    pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
    return boxes[pick], image_inds[pick], points[pick]


def _per_image(
    n_images: int, boxes: torch.Tensor, image_inds: torch.Tensor, points: torch.Tensor
) -> tuple[Any, Any, Any]:
    """MTCNN.detect's answer: per image its boxes (largest first), scores and landmarks,
    or None (and [None]) for an image without faces."""
    boxes_np = boxes.cpu().numpy()
    points_np = points.cpu().numpy()
    inds_np = image_inds.cpu().numpy()
    found_boxes: list[Any] = []
    found_probs: list[Any] = []
    found_points: list[Any] = []
    for i in range(n_images):
        mine = np.flatnonzero(inds_np == i)
        if len(mine) == 0:
            found_boxes.append(None)
            found_probs.append([None])
            found_points.append(None)
            continue
        b, p = boxes_np[mine], points_np[mine]
        largest = np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[::-1]
        b, p = b[largest], p[largest]
        found_boxes.append(b[:, :4])
        found_probs.append(b[:, 4])
        found_points.append(p)
    return found_boxes, found_probs, found_points
