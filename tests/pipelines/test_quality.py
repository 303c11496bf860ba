"""Quality gates: pose from landmarks, blur from the chip, and the order of the verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from pipelines.align import apply_transform
from pipelines.config import QualityConfig
from pipelines.embedders.templates import DLIB_TEMPLATES
from pipelines.quality import QualityGate, estimate_pose, laplacian_variance
from pipelines.schemas import FaceDetections

pytestmark = pytest.mark.timeout(60)

FRONTAL = DLIB_TEMPLATES["mtcnn-fit"]  # a typical frontal face's five landmarks


def similarity(scale: float, degrees: float, tx: float = 0, ty: float = 0) -> np.ndarray:
    a = np.radians(degrees)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]]
    )


def test_frontal_face_is_frontal():
    yaw, pitch, roll = estimate_pose(FRONTAL[None])
    assert abs(yaw[0]) < 3 and abs(pitch[0]) < 12 and abs(roll[0]) < 2


@pytest.mark.parametrize("scale, degrees", [(0.3, 0), (1, 35), (4, -80), (2, 170)])
def test_pose_ignores_scale_and_roll(scale, degrees):
    shifted = FRONTAL.copy()
    shifted[2, 0] += 12  # nose towards image-right: a turned head
    base = estimate_pose(shifted[None])
    moved = apply_transform(similarity(scale, degrees, 300, -40), shifted)
    yaw, pitch, roll = estimate_pose(moved[None])
    assert yaw[0] == pytest.approx(base[0][0], abs=1e-3)
    assert pitch[0] == pytest.approx(base[1][0], abs=1e-3)
    assert ((roll[0] - base[2][0] - degrees + 180) % 360 - 180) == pytest.approx(0, abs=1e-3)


def test_yaw_grows_with_nose_offset_and_keeps_its_sign():
    faces = np.repeat(FRONTAL[None], 5, axis=0)
    offsets = np.array([-20.0, -8.0, 0.0, 8.0, 20.0])
    faces[:, 2, 0] += offsets
    yaw, _, _ = estimate_pose(faces)
    assert (np.diff(yaw) > 0).all()
    assert np.sign(yaw[[0, 4]]).tolist() == [-1.0, 1.0]


def test_pitch_follows_the_nose_between_eyes_and_mouth():
    faces = np.repeat(FRONTAL[None], 3, axis=0)
    faces[0, 2, 1] -= 15  # nose near the eyes: looking up
    faces[2, 2, 1] += 15  # nose near the mouth: looking down
    _, pitch, _ = estimate_pose(faces)
    assert pitch[0] < pitch[1] < pitch[2]


def test_upside_down_face_is_extreme_pitch():
    flipped = FRONTAL.copy()
    flipped[:, 1] = 150 - flipped[:, 1]  # mouth above the eyes
    _, pitch, _ = estimate_pose(flipped[None])
    assert pitch[0] == 90


def test_no_landmarks():
    yaw, pitch, roll = estimate_pose(np.zeros((0, 5, 2)))
    assert yaw.shape == pitch.shape == roll.shape == (0,)


def texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)


def test_blur_measure_orders_sharp_above_blurred():
    sharp = texture()
    soft = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(2)))
    flat = np.full_like(sharp, 120)
    v = laplacian_variance(np.stack([sharp, soft, flat]))
    assert v[0] > 10 * v[1] and v[2] == 0


def test_blur_measure_is_size_independent():
    img = Image.fromarray(texture()).filter(ImageFilter.GaussianBlur(1.5))
    v150 = laplacian_variance(np.asarray(img)[None])[0]
    v160 = laplacian_variance(np.asarray(img.resize((160, 160), Image.Resampling.BILINEAR))[None])
    assert v160[0] == pytest.approx(v150, rel=0.25)


def detections(eye_distance: float, score: float, nose_dx: float = 0.0) -> FaceDetections:
    lm = FRONTAL * (eye_distance / np.linalg.norm(FRONTAL[1] - FRONTAL[0]))
    lm[2, 0] += nose_dx * eye_distance
    return FaceDetections(
        np.zeros(1, np.int32),
        np.array([[0, 0, 100, 100]], np.float32),
        lm[None].astype(np.float32),
        np.array([score], np.float32),
    )


@pytest.mark.parametrize(
    "eye, score, nose_dx, sharp, reason",
    [
        (40, 0.999, 0.0, True, ""),
        (5, 0.999, 0.0, True, "small"),
        (5, 0.5, 0.9, False, "small"),  # the first failing check is the reason
        (40, 0.5, 0.9, False, "low_score"),
        (40, 0.999, 0.9, False, "pose"),
        (40, 0.999, 0.0, False, "blur"),
    ],
)
def test_gate_verdicts_and_their_order(eye, score, nose_dx, sharp, reason):
    chip = texture() if sharp else np.full((150, 150, 3), 90, np.uint8)
    q = QualityGate(QualityConfig()).assess(detections(eye, score, nose_dx), chip[None])
    assert q.reason[0] == reason
    assert q.passed[0] == (reason == "")
    if reason:
        assert q.rejection_counts() == {reason: 1}


def test_quality_score_prefers_big_frontal_sharp_faces():
    gate = QualityGate(QualityConfig())
    good = gate.assess(detections(40, 0.999), texture()[None]).quality_score[0]
    small = gate.assess(detections(12, 0.999), texture()[None]).quality_score[0]
    turned = gate.assess(detections(40, 0.999, 0.4), texture()[None]).quality_score[0]
    assert good > small and good > turned


def test_real_aligned_faces_pass(engine, data):
    """Clean LFW portraits pass every gate; the same chips blurred fail on blur."""
    from pipelines.images import load_image

    paths = sorted((data / "lfw" / "Colin_Powell").glob("*.jpg"))[:8]
    batch = engine.process([load_image(p) for p in paths])
    assert batch.passed.all(), batch.quality.reason  # measured: 8 of 8 pass
    blurred = [
        np.asarray(Image.open(p).convert("RGB").filter(ImageFilter.GaussianBlur(4))) for p in paths
    ]
    blurry = engine.process(blurred)
    assert (blurry.quality.blur < batch.quality.blur.min()).all()
    assert "blur" in set(blurry.quality.reason)
