"""Alignment templates: where each embedder wants MTCNN's five landmarks, in chip pixels.

Order: left eye, right eye, nose tip, left mouth corner, right mouth corner (image left first).

``DLIB_TEMPLATES["mtcnn-fit"]``: dlib's ResNet was trained on chips from
``get_face_chip_details(shape5, size=150, padding=0.25)``, which places dlib's own five points
(eye corners and the nose base, not MTCNN's points) on a fixed mean-face template. We ran
dlib's HOG detector and 5-point shape predictor (from dlib-bin) and MTCNN on 595 LFW images
of people outside the evaluation folds, mapped each MTCNN landmark set through dlib's chip
transform, and took the mean: MTCNN's points where dlib's chip puts them. Per-point spread
(std, px): eyes 1.8-2.0, nose 6.1/4.3, mouth 4.2-5.2. Reproduce with
``python benchmarks/derive_templates.py``.

``DLIB_TEMPLATES["dlib-chip"]``: the same points mapped through dlib's *exact* chip transform
(rebuilt from ``get_face_chip_details``; pixel-identical to ``dlib.get_face_chip``) on 778
LFW faces, mirrored left-right and averaged, so a mirrored face aligns like its mirror.
``"dlib-chip-eyes"`` uses those points with the per-landmark fit weights (eyes 1, nose 0.3,
mouth corners 0.01) that bring the fitted transform closest to dlib's own: 2.58 px RMS over
the inner chip on held-out faces, against 4.07 px with equal weights (dlib ignores the mouth,
and MTCNN's mouth corners move with expression).

``FACENET_TEMPLATE``: facenet-pytorch's InceptionResnetV1 is fed MTCNN box crops (margin 0)
resized to 160x160. The template is the mean landmark position in such crops over 298
CelebA faces, so that a similarity warp reproduces the crop's framing without its
non-uniform stretch.
"""

from __future__ import annotations

import numpy as np

_DLIB_CHIP = np.array(
    [[47.63, 46.04], [102.37, 46.04], [75.00, 77.69], [51.09, 105.91], [98.91, 105.91]]
)
DLIB_TEMPLATES: dict[str, np.ndarray] = {
    "mtcnn-fit": np.array(
        [[48.77, 47.10], [102.78, 46.67], [75.05, 78.19], [52.11, 105.80], [99.42, 105.61]]
    ),
    "dlib-chip": _DLIB_CHIP,
    "dlib-chip-eyes": _DLIB_CHIP,
}

FACENET_TEMPLATE = np.array(
    [[44.73, 63.72], [116.73, 62.05], [81.43, 96.88], [50.37, 121.48], [114.26, 119.93]]
)

# Per-landmark weights of the similarity fit, for templates that have them (default: equal).
DLIB_TEMPLATE_WEIGHTS: dict[str, np.ndarray] = {
    "dlib-chip-eyes": np.array([1.0, 1.0, 0.3, 0.01, 0.01]),
}
