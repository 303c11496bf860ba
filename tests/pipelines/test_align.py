"""Alignment geometry: the similarity fit and the chip warp, on synthetic data with known
answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.align import (
    align_faces,
    apply_transform,
    invert_transform,
    similarity_transform,
    transform_scale,
    warp_chip,
)
from pipelines.embedders.templates import DLIB_TEMPLATES
from pipelines.schemas import FaceDetections

pytestmark = pytest.mark.timeout(30)

TEMPLATE = DLIB_TEMPLATES["mtcnn-fit"]


def similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([scale * rot, [[tx], [ty]]])


@pytest.mark.parametrize(
    "scale, degrees, tx, ty, noise, tol",
    [
        (1.0, 0.0, 0.0, 0.0, 0.0, 1e-9),
        (0.37, 12.0, -40.0, 310.0, 0.0, 1e-9),
        (2.5, -170.0, 1000.0, -5.0, 0.0, 1e-9),
        (1.2, 30.0, 15.0, 7.0, 0.5, 0.05),
        (0.1, -45.0, 3.0, 3.0, 0.05, 0.05),
    ],
)
def test_recovers_known_similarity(scale, degrees, tx, ty, noise, tol):
    rng = np.random.default_rng(0)
    truth = similarity(scale, degrees, tx, ty)
    src = TEMPLATE + rng.normal(0, 20, TEMPLATE.shape)
    dst = apply_transform(truth, src) + rng.normal(0, noise, src.shape)
    fit = similarity_transform(src, dst)
    # compare as relative error of the linear part, absolute (in dst pixels) of the mapping
    assert np.abs(fit[:, :2] - truth[:, :2]).max() <= tol * max(scale, 1)
    assert np.abs(apply_transform(fit, src) - apply_transform(truth, src)).max() <= 3 * noise + tol


def test_fit_is_least_squares_optimal():
    """Perturbing the fitted parameters never lowers the residual."""
    rng = np.random.default_rng(1)
    src = TEMPLATE + rng.normal(0, 3, TEMPLATE.shape)
    dst = apply_transform(similarity(0.8, 5, 10, -3), src) + rng.normal(0, 2, src.shape)
    fit = similarity_transform(src, dst)
    best = ((apply_transform(fit, src) - dst) ** 2).sum()
    for _ in range(200):
        a, b = fit[0, 0], fit[1, 0]
        da, db, dx, dy = rng.normal(0, 1e-2, 4)
        m = np.array([[a + da, -(b + db), fit[0, 2] + dx], [b + db, a + da, fit[1, 2] + dy]])
        assert ((apply_transform(m, src) - dst) ** 2).sum() >= best - 1e-9


@pytest.mark.parametrize("axis", [0, 1])
def test_never_fits_a_reflection(axis):
    src = TEMPLATE.copy()
    dst = src.copy()
    dst[:, axis] = 200 - dst[:, axis]  # a mirror image: no similarity maps src onto it
    fit = similarity_transform(src, dst)
    assert np.linalg.det(fit[:, :2]) > 0
    np.testing.assert_allclose(fit[0, 0], fit[1, 1])  # rotation-and-scale form
    np.testing.assert_allclose(fit[0, 1], -fit[1, 0])


@pytest.mark.parametrize(
    "src, dst, message",
    [
        (np.ones((5, 2)), TEMPLATE, "coincide"),
        (TEMPLATE[:1], TEMPLATE[:1], "K>=2"),
        (TEMPLATE, TEMPLATE[:4], "matching"),
        (np.zeros((5, 3)), np.zeros((5, 3)), "matching"),
    ],
)
def test_degenerate_input_is_an_error(src, dst, message):
    with pytest.raises(ValueError, match=message):
        similarity_transform(src, dst)


def test_zero_weights_ignore_points():
    rng = np.random.default_rng(2)
    src = TEMPLATE + rng.normal(0, 5, TEMPLATE.shape)
    dst = apply_transform(similarity(1.4, -8, 20, 30), src)
    dst[3:] += 40  # two wild points
    fit = similarity_transform(src, dst, np.array([1, 1, 0.3, 0, 0]))
    np.testing.assert_allclose(fit, similarity_transform(src[:3], dst[:3], [1, 1, 0.3]))
    np.testing.assert_allclose(apply_transform(fit, src[:3]), dst[:3], atol=1e-9)


def test_scaled_weights_give_the_same_fit():
    rng = np.random.default_rng(4)
    src, dst = rng.normal(0, 10, (5, 2)), rng.normal(0, 10, (5, 2))
    w = np.array([1, 2, 0.5, 0.1, 3])
    np.testing.assert_allclose(
        similarity_transform(src, dst, w), similarity_transform(src, dst, 7 * w)
    )
    np.testing.assert_allclose(
        similarity_transform(src, dst, np.ones(5)), similarity_transform(src, dst)
    )


@pytest.mark.parametrize("weights", [[1, 1, 1, 1], [1, -1, 1, 1, 1], [0, 0, 0, 0, 0], [np.nan] * 5])
def test_bad_weights_are_an_error(weights):
    with pytest.raises(ValueError, match="weights"):
        similarity_transform(TEMPLATE, TEMPLATE, np.array(weights, float))


def test_weighted_points_that_coincide_are_degenerate():
    src = TEMPLATE.copy()
    src[1] = src[0]
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(src, TEMPLATE, np.array([1, 1, 0, 0, 0]))


def test_inverse_and_scale():
    m = similarity(1.7, 33, 4, -9)
    pts = np.array([[0.0, 0.0], [10.0, 3.0], [-7.0, 2.0]])
    np.testing.assert_allclose(apply_transform(invert_transform(m), apply_transform(m, pts)), pts)
    assert transform_scale(m) == pytest.approx(1.7)


def dot_image(h: int, w: int, x: int, y: int, radius: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[y - radius : y + radius + 1, x - radius : x + radius + 1] = 255
    return img


def centroid(chip: np.ndarray) -> np.ndarray:
    """Intensity centroid in continuous coordinates (pixel i covers [i, i+1))."""
    g = chip[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: g.shape[0], : g.shape[1]]
    return np.array([(g * (xs + 0.5)).sum(), (g * (ys + 0.5)).sum()]) / g.sum()


@pytest.mark.parametrize(
    "scale, degrees",
    [(1.0, 0.0), (1.3, 20.0), (0.8, -65.0), (2.0, 180.0), (0.3, 10.0), (0.12, -30.0)],
)
def test_warp_places_a_marked_point_where_the_transform_says(scale, degrees):
    radius = max(1, int(round(1.5 / scale)))  # survives downscaling
    x, y = 310, 220
    img = dot_image(480, 640, x, y, radius)
    size = 150
    target = np.array([70.0, 80.0])
    m = similarity(scale, degrees, 0, 0)
    m[:, 2] = target - apply_transform(m, np.array([[x + 0.5, y + 0.5]]))[0]
    chip = warp_chip(img, m, size)
    assert chip.shape == (size, size, 3) and chip.dtype == np.uint8
    assert np.abs(centroid(chip) - target).max() < 0.5


def test_chip_is_black_outside_the_image():
    img = np.full((50, 50, 3), 200, np.uint8)
    m = similarity(1.0, 0.0, 25.0, 25.0)  # image occupies chip [25, 75)
    chip = warp_chip(img, m, 100)
    assert chip.shape == (100, 100, 3)
    assert (chip[27:73, 27:73] == 200).all()
    outside = np.ones((100, 100), bool)
    outside[24:76, 24:76] = False
    assert (chip[outside] == 0).all()


def test_chip_entirely_off_the_image_is_black():
    img = np.full((50, 50, 3), 255, np.uint8)
    chip = warp_chip(img, similarity(1.0, 0.0, 500.0, 500.0), 64)
    assert chip.shape == (64, 64, 3) and not chip.any()


def test_align_faces_maps_landmarks_onto_the_template():
    truth = similarity(2.2, 15.0, 40.0, 60.0)  # chip -> frame
    landmarks = apply_transform(truth, TEMPLATE)
    frame = np.zeros((600, 500, 3), np.uint8)
    dets = FaceDetections(
        frame_index=np.zeros(2, np.int32),
        boxes=np.zeros((2, 4), np.float32),
        landmarks=np.stack([landmarks, landmarks]).astype(np.float32),
        scores=np.ones(2, np.float32),
    )
    chips, mats = align_faces([frame], dets, TEMPLATE, 150)
    assert chips.shape == (2, 150, 150, 3) and mats.shape == (2, 2, 3)
    np.testing.assert_allclose(apply_transform(mats[0], landmarks), TEMPLATE, atol=1e-3)
    assert transform_scale(mats[0]) == pytest.approx(1 / 2.2, rel=1e-4)
