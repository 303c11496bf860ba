"""Derive the alignment templates in ``pipelines/embedders/templates.py``, reproducibly.

Why: dlib's ResNet was trained on chips cut by dlib's own 5-point shape predictor (eye
corners and the base of the nose) with ``get_face_chip(img, shape, 150, 0.25)``. We detect
with MTCNN, whose five points are different ones (eye centres, nose tip, mouth corners), so
we need to know where MTCNN's points sit in dlib's chips, and how to weight them so that a
similarity fit to those positions reproduces dlib's chip. We measure it on LFW images of
people in no pairs-dev fold (so the LFW evaluation stays clean), with real dlib from
dlib-bin as the reference.

Templates (MTCNN order: left eye, right eye, nose tip, left mouth, right mouth; chip pixels
with pixel i covering [i, i+1), as ``pipelines.align`` uses them):
- ``mtcnn-fit``: the first derivation (kept to reproduce it): the mean of MTCNN's points
  mapped by a least-squares fit of dlib's five points onto dlib's template. That fit is not
  quite dlib's chip (dlib fits the other way round and maps the chip's pixel grid slightly
  differently), and all five points count equally.
- ``dlib-chip``: the mean of MTCNN's points under dlib's exact chip transform (rebuilt from
  ``get_face_chip_details``; checked pixel-exact against ``get_face_chip``), mirrored
  left-right and averaged, so that a flipped face aligns like its mirror image.
- ``dlib-chip-eyes``: the same points with per-landmark weights chosen on a grid to make
  the fitted transform closest to dlib's (RMS over a grid of chip points). MTCNN's mouth
  corners move with expression and dlib ignores the mouth; they end up weighted ~0.

Also derived: ``FACENET_TEMPLATE`` (mean MTCNN landmarks inside facenet-pytorch's
box-crop-resized-to-160 chips, on CelebA) and the LFW centre-face fallback of
``pipelines.evaluation.lfw`` (mean MTCNN landmarks and box on the same LFW images).

Run: ``.venv/bin/python benchmarks/derive_templates.py`` (about two minutes on a CPU).
Writes ``benchmarks/results/templates.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.align import apply_transform, similarity_transform, warp_chip  # noqa: E402
from pipelines.config import DetectorConfig  # noqa: E402
from pipelines.detect import FaceDetector  # noqa: E402
from pipelines.evaluation import lfw  # noqa: E402
from pipelines.images import load_image  # noqa: E402

CHIP, PADDING = 150, 0.25
# dlib's 5-point mean face (dlib/image_transforms/interpolation.h, get_face_chip_details)
DLIB_MEAN_FACE = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123479292, 0.6277975417333),
    ]
)
DLIB_TEMPLATE = (DLIB_MEAN_FACE + PADDING) / (2 * PADDING + 1) * CHIP
MIRROR = [1, 0, 2, 4, 3]  # MTCNN landmark order after a left-right flip
# where alignment error is measured: a 5x5 grid over the inner face of the 150 px chip
GRID = np.stack(np.meshgrid(np.linspace(30, 120, 5), np.linspace(30, 120, 5)), -1).reshape(-1, 2)
NOSE_WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.7, 1.0)
MOUTH_WEIGHTS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class LfwSample:
    """MTCNN landmarks and dlib's chip transform, for faces both found, on the same face."""

    mtcnn: np.ndarray  # (N, 5, 2) MTCNN landmarks, image pixels
    dlib_points: np.ndarray  # (N, 5, 2) dlib 5-point shape (integer pixel centres)
    dlib_chip: np.ndarray  # (N, 2, 3) dlib's exact image -> chip transform (our convention)
    boxes: np.ndarray  # (N, 4) MTCNN boxes


# ------------------------------------------------------------------------- data


def lfw_outside_folds(data: Path, seed: int) -> list[Path]:
    """LFW images of people in no pairs-dev fold, shuffled with ``seed``."""
    pairs = lfw.parse_pairs(data / "lfw" / "pairs-dev.txt")
    in_folds = {name for p in pairs for name in (p.a[0], p.b[0])}
    files = sorted((data / "lfw").glob("*/*.jpg"), key=str)  # as the first run sorted them
    random.Random(seed).shuffle(files)
    return [f for f in files if f.parent.name not in in_folds]


def dlib_models():
    import dlib
    import face_recognition_models

    models = Path(face_recognition_models.__file__).parent / "models"
    shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    return dlib.get_frontal_face_detector(), shape


def _rotate(centre: np.ndarray, point: tuple[float, float], angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    d = np.asarray(point) - centre
    return centre + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])


def dlib_chip_matrix(details) -> np.ndarray:
    """dlib's image -> chip map for ``chip_details``, in our pixel convention.

    Mirrors dlib's get_mapping_to_chip: the rotated rectangle's corners go to the chip's
    corner pixel centres (0, 0), (cols-1, 0), (cols-1, rows-1). dlib puts pixel centres at
    integers, we put them at +0.5, hence the shifts.
    """
    r, angle = details.rect, details.angle
    centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    corners = [(r.left(), r.top()), (r.right(), r.top()), (r.right(), r.bottom())]
    src = np.array([_rotate(centre, p, angle) for p in corners])
    dst = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], float)
    m = np.linalg.solve(np.hstack([src, np.ones((3, 1))]), dst).T
    m[:, 2] += 0.5 - m[:, :2] @ np.array([0.5, 0.5])
    return m


def _central(boxes: np.ndarray, centre: np.ndarray) -> int:
    mid = (boxes[:, :2] + boxes[:, 2:]) / 2
    return int(np.argmin(np.linalg.norm(mid - centre, axis=1)))


def collect_lfw(files: list[Path], detector: FaceDetector, largest_hog: bool) -> LfwSample:
    """Faces found by both dlib (HOG) and MTCNN, within 30 px of each other.

    ``largest_hog`` picks dlib's largest face (the first derivation did), else the central.
    """
    import dlib

    hog, shape_predictor = dlib_models()
    rows: list[tuple] = []
    for f in files:
        img = load_image(f)
        rects = hog(img, 1)
        dets = detector.detect([img])
        if not rects or not len(dets):
            continue
        rect_boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], float)
        centre = np.array([img.shape[1] / 2, img.shape[0] / 2])
        k = (
            int(np.argmax([r.area() for r in rects]))
            if largest_hog
            else _central(rect_boxes, centre)
        )
        hog_centre = (rect_boxes[k, :2] + rect_boxes[k, 2:]) / 2
        j = _central(dets.boxes, hog_centre)
        if np.linalg.norm((dets.boxes[j, :2] + dets.boxes[j, 2:]) / 2 - hog_centre) > 30:
            continue
        shape = shape_predictor(img, rects[k])
        points = np.array([(p.x, p.y) for p in shape.parts()], float)
        chip = dlib_chip_matrix(dlib.get_face_chip_details(shape, CHIP, PADDING))
        rows.append((dets.landmarks[j], points, chip, dets.boxes[j]))
    mtcnn, points, chips, boxes = (np.array(c) for c in zip(*rows, strict=True))
    return LfwSample(mtcnn, points, chips, boxes)


def check_chip_matrix(files: list[Path], n: int = 10) -> float:
    """Largest pixel difference between dlib.get_face_chip and our warp with dlib's map."""
    import dlib

    hog, shape_predictor = dlib_models()
    worst = 0.0
    for f in files[:n]:
        img = load_image(f)
        rects = hog(img, 1)
        if not rects:
            continue
        shape = shape_predictor(img, rects[0])
        theirs = dlib.get_face_chip(img, shape, CHIP, PADDING).astype(int)
        m = dlib_chip_matrix(dlib.get_face_chip_details(shape, CHIP, PADDING))
        ours = warp_chip(img, m, CHIP).astype(int)
        worst = max(worst, float(np.abs(theirs - ours)[2:-2, 2:-2].max()))
    return worst


# ------------------------------------------------------------------------- templates


def symmetrise(points: np.ndarray, size: int = CHIP) -> np.ndarray:
    mirrored = points[MIRROR].copy()
    mirrored[:, 0] = size - mirrored[:, 0]
    return (points + mirrored) / 2


def mapped_mean(landmarks: np.ndarray, mats: np.ndarray) -> np.ndarray:
    return np.mean([apply_transform(m, lm) for lm, m in zip(landmarks, mats, strict=True)], 0)


def alignment_rms(
    landmarks: np.ndarray, dlib_chip: np.ndarray, template: np.ndarray, weights: np.ndarray
) -> float:
    """RMS distance (chip px) between where our fit and dlib's chip put the GRID points."""
    err = []
    for lm, theirs in zip(landmarks, dlib_chip, strict=True):
        ours = similarity_transform(lm, template, weights)
        back = np.linalg.solve(theirs[:, :2], (GRID - theirs[:, 2]).T).T  # chip -> image
        err.append(((apply_transform(ours, back) - GRID) ** 2).sum(1))
    return float(np.sqrt(np.mean(err)))


def best_weights(landmarks: np.ndarray, dlib_chip: np.ndarray, template: np.ndarray):
    """Grid search: eyes weigh 1, the nose and the two mouth corners get the best weights."""
    scores = {
        (wn, wm): alignment_rms(landmarks, dlib_chip, template, np.array([1, 1, wn, wm, wm]))
        for wn in NOSE_WEIGHTS
        for wm in MOUTH_WEIGHTS
        if wn + wm > 0
    }
    wn, wm = min(scores, key=scores.get)
    return np.array([1.0, 1.0, wn, wm, wm])


def facenet_template(data: Path, detector: FaceDetector, n: int, seed: int) -> dict:
    """Mean MTCNN landmarks in facenet-pytorch's chips (box crop, margin 0, resized to 160)."""
    files = sorted((data / "celeba").glob("*/*.jpg"))
    random.Random(seed).shuffle(files)
    pts = []
    for f in files[:n]:
        dets = detector.detect([load_image(f)])
        if not len(dets):
            continue
        i = int(np.argmax(dets.widths))
        (x1, y1, x2, y2), lm = dets.boxes[i], dets.landmarks[i]
        pts.append(np.stack([(lm[:, 0] - x1) / (x2 - x1), (lm[:, 1] - y1) / (y2 - y1)], 1) * 160)
    pts = np.array(pts)
    return {"points": pts.mean(0), "std": pts.std(0), "n": len(pts)}


# ------------------------------------------------------------------------- main


def derive(data: Path, seed: int, n_first: int, n_celeba: int) -> dict:
    files = lfw_outside_folds(data, seed)
    detector = FaceDetector(DetectorConfig(min_face_size=40), device="cpu").load()
    out: dict = {"lfw_images_outside_folds": len(files)}
    out["dlib_chip_matrix_max_pixel_diff"] = check_chip_matrix(files)

    # the first derivation, as it was run: 600 images, dlib's largest face, forward LS fit
    first = collect_lfw(files[:n_first], detector, largest_hog=True)
    naive = np.array([similarity_transform(p, DLIB_TEMPLATE) for p in first.dlib_points])
    legacy = mapped_mean(first.mtcnn, naive)

    # the exact derivation: every image, half to fit, half to measure
    sample = collect_lfw(files, detector, largest_hog=False)
    half = len(sample.mtcnn) // 2
    fit, held = slice(0, half), slice(half, None)
    exact = symmetrise(mapped_mean(sample.mtcnn[fit], sample.dlib_chip[fit]))
    weights = best_weights(sample.mtcnn[fit], sample.dlib_chip[fit], exact)
    ones = np.ones(5)
    templates = {
        "mtcnn-fit": (legacy, ones),
        "dlib-chip": (exact, ones),
        "dlib-chip-eyes": (exact, weights),
    }
    out["templates"] = {
        name: {
            "points": np.round(t, 2).tolist(),
            "weights": w.tolist(),
            "rms_px_fit_half": alignment_rms(sample.mtcnn[fit], sample.dlib_chip[fit], t, w),
            "rms_px_held_out_half": alignment_rms(sample.mtcnn[held], sample.dlib_chip[held], t, w),
        }
        for name, (t, w) in templates.items()
    }
    spread = np.stack(
        [apply_transform(m, lm) for lm, m in zip(sample.mtcnn, sample.dlib_chip, strict=True)]
    )
    out["mtcnn_points_in_dlib_chip_std_px"] = np.round(spread.std(0), 2).tolist()
    out["n_lfw_faces"] = {"first": len(first.mtcnn), "exact": len(sample.mtcnn)}
    out["lfw_centre_face"] = {
        "landmarks": np.round(sample.mtcnn.mean(0), 2).tolist(),
        "box": np.round(sample.boxes.mean(0), 2).tolist(),
    }
    fn = facenet_template(data, detector, n_celeba, seed)
    out["facenet"] = {
        "points": np.round(fn["points"], 2).tolist(),
        "std_px": np.round(fn["std"], 2).tolist(),
        "n": fn["n"],
    }
    return out


def print_table(result: dict) -> None:
    diff = result["dlib_chip_matrix_max_pixel_diff"]
    print(f"dlib chip map vs dlib.get_face_chip: max pixel diff {diff}")
    print(f"LFW faces used: {result['n_lfw_faces']}")
    print(f"{'template':16s} {'RMS fit':>8s} {'RMS held':>9s}  weights / points")
    for name, t in result["templates"].items():
        print(
            f"{name:16s} {t['rms_px_fit_half']:8.3f} {t['rms_px_held_out_half']:9.3f}  "
            f"{t['weights']}\n{'':36s}{t['points']}"
        )
    print(f"MTCNN points in dlib's chip, std (px): {result['mtcnn_points_in_dlib_chip_std_px']}")
    print(f"LFW centre face: {result['lfw_centre_face']}")
    print(
        f"facenet template ({result['facenet']['n']} CelebA faces): {result['facenet']['points']}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "templates.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--first-n", type=int, default=600, help="images of the first derivation")
    ap.add_argument("--celeba-n", type=int, default=300)
    args = ap.parse_args(argv)
    import torch

    torch.manual_seed(args.seed)
    result = derive(args.data, args.seed, args.first_n, args.celeba_n)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
