"""Live frames decoded at the working size (``pipelines.images.decode_reduced``) and what is
found in them mapped back to the camera's pixels (``pipelines.live.working_size``): boxes
and landmarks shown to officers and stored must be in the original frame's coordinates."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.images import decode_image, decode_reduced, working_size
from pipelines.live.working_size import UNSCALED, in_original, scale_between
from pipelines.schemas import EmbedderInfo, FaceBatch, FaceDetections, Quality
from pipelines.track import iou_matrix


def jpeg(rgb: np.ndarray, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(rgb)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def bright_box(rgb: np.ndarray) -> np.ndarray:
    """x1 y1 x2 y2 of the pixels brighter than mid-grey."""
    ys, xs = np.nonzero(rgb.mean(axis=2) > 128)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.timeout(30)
def test_a_big_jpeg_is_decoded_at_the_working_size_and_maps_back():
    full = np.zeros((1080, 1920, 3), np.uint8)
    full[300:540, 900:1080] = 255  # a "face" 180 x 240 at x 900, y 300
    image, original = decode_reduced(jpeg(full), "frame", 10_000_000, 1280)
    assert image.shape == (720, 1280, 3) and original == (1920, 1080)
    sx, sy = scale_between(original, (image.shape[1], image.shape[0]))
    assert (sx, sy) == pytest.approx((1.5, 1.5))
    back = bright_box(image) * np.array([sx, sy, sx, sy], np.float32)
    assert back == pytest.approx([900, 300, 1080, 540], abs=4)


@pytest.mark.timeout(30)
def test_a_rotated_jpeg_is_turned_before_its_size_is_taken():
    """EXIF orientation 6 (the camera was turned): the image shown is 1080 wide, 1920 high;
    the original size and the scale are those of the turned image."""
    full = np.zeros((1080, 1920, 3), np.uint8)
    full[100:300, 1500:1700] = 255
    data = jpeg(full, orientation=6)
    image, original = decode_reduced(data, "frame", 10_000_000, 960)
    upright = decode_image(data)
    assert upright.shape == (1920, 1080, 3) and original == (1080, 1920)
    assert image.shape == (960, 540, 3)
    sx, sy = scale_between(original, (image.shape[1], image.shape[0]))
    back = bright_box(image) * np.array([sx, sy, sx, sy], np.float32)
    assert back == pytest.approx(bright_box(upright), abs=5)


@pytest.mark.timeout(30)
def test_frames_within_the_working_size_are_decoded_as_they_are():
    rgb = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    data = jpeg(rgb)
    image, original = decode_reduced(data, "frame", 10_000_000, 1280)
    assert original == (640, 360) and np.array_equal(image, decode_image(data))
    assert decode_reduced(data, "frame", 10_000_000, 0)[1] == (640, 360)  # 0: no limit
    assert working_size(4000, 10, 1000) == (1000, 2) and working_size(10, 4000, 100) == (1, 100)


def _batch(boxes: np.ndarray, landmarks: np.ndarray) -> FaceBatch:
    n = len(boxes)
    z = np.zeros(n, np.float32)
    quality = Quality(np.ones(n, bool), np.full(n, "", object), z, z, z, z, z)
    dets = FaceDetections(np.zeros(n, np.int32), boxes, landmarks, np.full(n, 0.99, np.float32))
    crops = [np.zeros((4, 4, 3), np.uint8) for _ in range(n)]
    return FaceBatch(
        dets, quality, np.ones((n, 4), np.float32), EmbedderInfo("e", "1", 4), 1, crops
    )


@pytest.mark.timeout(30)
def test_in_original_scales_boxes_and_landmarks_per_axis_and_leaves_the_rest():
    boxes = np.array([[10, 20, 30, 60]], np.float32)
    landmarks = np.array([[[12, 30], [28, 30], [20, 40], [14, 50], [26, 50]]], np.float32)
    batch = _batch(boxes, landmarks)
    out = in_original(batch, (2.0, 3.0))
    assert out.detections.boxes.tolist() == [[20, 60, 60, 180]]
    assert out.detections.landmarks[0].tolist() == (landmarks[0] * [2, 3]).tolist()
    assert batch.detections.boxes.tolist() == [[10, 20, 30, 60]]  # the input is untouched
    assert out.crops is batch.crops and out.embeddings is batch.embeddings
    assert in_original(batch, UNSCALED) is batch
    with pytest.raises(ValueError):
        in_original(batch, (0.0, 1.0))


@pytest.mark.timeout(120)
def test_faces_found_at_the_working_size_land_on_the_full_frame_faces(engine, data):
    """A clip frame blown up to 1920x1080: the faces the engine finds in it decoded at
    1280 wide, mapped back, are where it finds them in the full frame."""
    import decord

    reader = decord.VideoReader(str(data / "video" / "short_hamilton_clip.mp4"))
    small = reader[84].asnumpy()  # 640x360, Lin-Manuel in view
    full = np.asarray(Image.fromarray(small).resize((1920, 1080), Image.Resampling.BICUBIC))
    data_jpeg = jpeg(full)
    whole = engine.process_regions([decode_image(data_jpeg)], [None])
    image, original = decode_reduced(data_jpeg, "frame", 10_000_000, 1280)
    found = engine.process_regions([image], [None], with_crops=True)
    back = in_original(found, scale_between(original, (image.shape[1], image.shape[0])))
    assert len(whole.detections) >= 1 and len(back.detections) == len(whole.detections)
    iou = iou_matrix(back.detections.boxes, whole.detections.boxes)
    assert (iou.max(axis=1) > 0.8).all(), iou
    assert all(c.shape[0] > 16 for c in back.crops or [])  # alert crops from working pixels
