"""Live region detection (``live.detect_every``): a camera's frame is searched whole on
every Nth analysed frame and, in between, only around the faces of the camera's last
result; the pool runs whole and region searches of several cameras in one call.

The runner's choices are checked with a recording fake pool (the real one needs Ray and
the models; what is tested here is which regions the runner asks for). The engine's
mixed call runs the real MTCNN + dlib-resnet on frames of the live test clip.
"""

from __future__ import annotations

import asyncio

import decord
import numpy as np
import pytest

from pipelines.config import LiveConfig
from pipelines.images import encode_jpeg
from pipelines.live.cameras import CameraSpec
from pipelines.schemas import EmbedderInfo, FaceBatch, FaceDetections, Quality
from pipelines.track import iou_matrix
from serve.ingest import CameraRunner
from serve.sources import Pacer

INFO = EmbedderInfo("dlib-resnet", "test", 4)
JPEG = encode_jpeg(np.zeros((48, 64, 3), np.uint8))


def batch_with(boxes: np.ndarray) -> FaceBatch:
    """A pool answer with faces at ``boxes`` (quality-failed, so nothing is matched)."""
    n = len(boxes)
    dets = FaceDetections(
        np.zeros(n, np.int32),
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.zeros((n, 5, 2), np.float32),
        np.full(n, 0.99, np.float32),
    )
    z = np.zeros(n, np.float32)
    quality = Quality(np.zeros(n, bool), np.full(n, "small", object), z, z, z, z, z)
    return FaceBatch(dets, quality, np.zeros((n, 4), np.float32), INFO, 1)


class FakePool:
    """Records the regions each analysed frame was sent with and answers with the faces
    scripted for that frame (a stand-in for the FacePool, which needs Ray and models)."""

    def __init__(self, answers: list[np.ndarray]):
        self.answers, self.asked = answers, []

    async def analyse(self, frame: np.ndarray, regions: np.ndarray | None) -> FaceBatch:
        self.asked.append(None if regions is None else np.array(regions))
        return batch_with(self.answers[len(self.asked) - 1])


async def decode(data: bytes) -> np.ndarray:
    return np.zeros((48, 64, 3), np.uint8)


async def push_all(runner: CameraRunner, n: int, pause_s: dict[int, float] | None = None):
    runner.pacer = Pacer(1e6)  # every frame is due
    runner.start()
    try:
        for i in range(n):
            await asyncio.sleep((pause_s or {}).get(i, 0.0))
            out = await runner.push(JPEG, decode, wait=True)
            assert out["status"] == "analysed", out
    finally:
        await runner.stop()


def box(x: float) -> np.ndarray:
    return np.array([[x, 10.0, x + 40.0, 50.0]], np.float32)


@pytest.mark.timeout(30)
def test_whole_every_nth_frame_and_regions_around_the_last_faces_between():
    answers = [box(10 * i) for i in range(7)]
    answers[4] = np.zeros((0, 4), np.float32)  # the face is lost in frame 4
    pool = FakePool(answers)
    runner = CameraRunner(
        CameraSpec(id="cam", url="push"), LiveConfig(detect_every=3), pool.analyse, None
    )
    asyncio.run(push_all(runner, 7))
    asked = pool.asked
    assert [a is None for a in asked] == [True, False, False, True, False, False, True]
    np.testing.assert_array_equal(asked[1], answers[0])  # around the last result's face
    np.testing.assert_array_equal(asked[2], answers[1])  # which moved: follow it
    np.testing.assert_array_equal(asked[4], answers[3])
    assert asked[5].shape == (0, 4)  # nothing there last time: no search until frame 6
    assert runner.status()["frames_region_searched"] == 4


@pytest.mark.timeout(30)
def test_every_frame_whole_at_detect_every_1_and_after_a_gap():
    pool = FakePool([box(10)] * 3)
    runner = CameraRunner(
        CameraSpec(id="cam", url="push"), LiveConfig(detect_every=1), pool.analyse, None
    )
    asyncio.run(push_all(runner, 3))
    assert all(a is None for a in pool.asked)
    # a result older than a track lives is no guide: the next frame is searched whole
    pool = FakePool([box(10)] * 3)
    policy = LiveConfig(detect_every=5, track_max_gap_s=0.2)
    runner = CameraRunner(CameraSpec(id="cam", url="push"), policy, pool.analyse, None)
    asyncio.run(push_all(runner, 3, pause_s={2: 0.4}))
    assert [a is None for a in pool.asked] == [True, False, True]


@pytest.fixture(scope="module")
def clip_frames(data) -> list[np.ndarray]:
    """Three consecutive analysed frames of the live test clip (5 fps) with faces."""
    reader = decord.VideoReader(str(data / "video/short_hamilton_clip.mp4"))
    return [reader[i].asnumpy() for i in (120, 126, 132)]


@pytest.mark.timeout(180)
def test_engine_searches_whole_and_region_frames_of_several_cameras_in_one_call(
    engine, clip_frames
):
    a, b, c = clip_frames
    whole = [engine.process([f]) for f in (a, b)]
    assert len(whole[0]) and len(whole[1]), "the chosen frames must show faces"
    mixed = engine.process_regions(
        [a, b, c], [None, whole[0].detections.boxes, np.zeros((0, 4), np.float32)]
    )
    by_frame = [mixed.detections.frame_index == i for i in range(3)]
    # frame a, searched whole: what a whole-frame call finds, in the same places
    np.testing.assert_allclose(
        mixed.detections.boxes[by_frame[0]], whole[0].detections.boxes, atol=1.0
    )
    # frame b, searched around a's faces: b's faces that were in a are found again, with
    # embeddings of the same person (cosine similarity near 1)
    found_b = mixed.detections.boxes[by_frame[1]]
    iou = iou_matrix(whole[1].detections.boxes, found_b)
    again = [i for i in range(len(iou)) if iou[i].max(initial=0) > 0.5]
    assert again, (whole[1].detections.boxes, found_b)
    for i in again:
        j = int(np.argmax(iou[i]))
        if whole[1].passed[i] and mixed.passed[np.flatnonzero(by_frame[1])[j]]:
            e1 = whole[1].embeddings[i]
            e2 = mixed.embeddings[np.flatnonzero(by_frame[1])[j]]
            assert float(e1 @ e2 / np.linalg.norm(e1) / np.linalg.norm(e2)) > 0.97
    # frame c, no regions: no face, no search
    assert not by_frame[2].any() and mixed.n_frames == 3
    assert mixed.crops is None or len(mixed.crops) == len(mixed)


@pytest.mark.timeout(180)
def test_a_frame_with_more_faces_than_regions_pay_for_is_searched_whole(engine, clip_frames):
    """Four regions of a 640x360 frame cost as much as the whole frame (P-net's pixels,
    ``FaceEngine._regions_cost_more``): the live path then searches it whole, as the
    archive path does, and finds what a whole-frame search finds."""
    frame = clip_frames[0]
    calls: list[str] = []
    detector = engine.detector
    real_detect, real_regions = detector.detect, detector.detect_regions

    def detect(frames):
        calls.append("whole")
        return real_detect(frames)

    def detect_regions(frames, index, boxes):
        calls.append(f"regions:{len(boxes)}")
        return real_regions(frames, index, boxes)

    many = np.array([[x, 40.0, x + 60.0, 100.0] for x in (20, 160, 300, 440)], np.float32)
    detector.detect, detector.detect_regions = detect, detect_regions
    try:
        out = engine.process_regions([frame, frame], [many, many[:2]])
    finally:
        detector.detect, detector.detect_regions = real_detect, real_regions
    assert calls == ["whole", "regions:2"]
    whole = engine.process([frame])
    first = out.detections.frame_index == 0
    np.testing.assert_allclose(out.detections.boxes[first], whole.detections.boxes, atol=1.0)
