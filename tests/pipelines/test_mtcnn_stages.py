"""Our MTCNN stage driver against facenet-pytorch's own: the same faces, boxes, scores and
landmarks (to float rounding), on real photos, a real video frame and region batches."""

from __future__ import annotations

import decord
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines import mtcnn_stages
from pipelines.detect import FaceDetector
from pipelines.images import load_image

pytestmark = pytest.mark.timeout(180)

PHOTOS = ["obama.jpg", "two_people.jpg", "multiface.jpg", "obama-720p.jpg"]


@pytest.fixture(scope="module")
def mtcnn():
    return FaceDetector(device="cpu").load()._mtcnn


def _planar(frames: list[np.ndarray]) -> torch.Tensor:
    """(N, H, W, 3) float view of planar memory, as FaceDetector hands MTCNN its batches."""
    t = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous().float()
    return t.permute(0, 2, 3, 1)


def _assert_same(ours, theirs) -> int:
    faces = 0
    for k in range(len(theirs[0])):
        if theirs[0][k] is None:
            assert ours[0][k] is None
            continue
        # facenet-pytorch returns object arrays when every image has as many faces
        boxes, probs, marks = (np.asarray(part[k], np.float64) for part in theirs)
        assert ours[0][k] is not None and ours[0][k].shape == boxes.shape
        np.testing.assert_allclose(ours[0][k], boxes, atol=1e-3)
        np.testing.assert_allclose(np.asarray(ours[1][k], np.float64), probs, atol=1e-5)
        np.testing.assert_allclose(ours[2][k], marks, atol=1e-3)
        faces += len(boxes)
    return faces


@pytest.mark.parametrize("min_face", [12.0, 20.0, 40.0])
@pytest.mark.parametrize("name", PHOTOS)
def test_photos_match_facenet_pytorch(mtcnn, data, name, min_face):
    batch = _planar([load_image(data / "known" / name)])
    mtcnn.min_face_size = min_face
    ours = mtcnn_stages.detect(mtcnn, batch)
    theirs = mtcnn.detect(batch, landmarks=True)
    _assert_same(ours, theirs)


def test_video_frames_and_empty_frames_match(mtcnn, data):
    """A batch of real video frames with a blank one among them (no faces: None)."""
    video = decord.VideoReader(str(data / "video" / "short_hamilton_clip.mp4"))
    frames = [video[i].asnumpy() for i in (0, 40, 80)]
    frames.append(np.zeros_like(frames[0]))
    batch = _planar(frames)
    mtcnn.min_face_size = 20.0
    ours = mtcnn_stages.detect(mtcnn, batch)
    theirs = mtcnn.detect(batch, landmarks=True)
    assert _assert_same(ours, theirs) > 0
    assert ours[0][3] is None


def test_crop_resize_is_area_interpolation():
    """Boxes of many sizes (grouped, and the large ones one by one), at image edges too."""
    rng = np.random.default_rng(3)
    imgs = torch.from_numpy(rng.uniform(0, 255, (2, 3, 300, 400)).astype(np.float32))
    n = 60
    sides = rng.integers(1, 280, n)
    y0 = rng.integers(0, 300 - sides.clip(max=299)).astype(np.int64)
    x0 = rng.integers(0, 400 - sides).astype(np.int64)
    y1 = np.minimum(y0 + sides, 300)
    x1 = np.minimum(x0 + sides + rng.integers(-1, 2, n), 400).clip(min=x0 + 1)
    inds = torch.from_numpy(rng.integers(0, 2, n))
    for size in (24, 48):
        got = mtcnn_stages.crop_resize(imgs, inds, y0, y1, x0, x1, size)
        for k in range(n):
            crop = imgs[int(inds[k]), :, y0[k] : y1[k], x0[k] : x1[k]][None]
            want = F.interpolate(crop, size=(size, size), mode="area")[0]
            torch.testing.assert_close(got[k], want, atol=1e-3, rtol=1e-5)
