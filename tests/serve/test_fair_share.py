"""Fair share of an overloaded pool (``serve.fair_share.FairShare``): live frames of all
cameras at the pool are bounded, cameras take turns for a free place, each camera keeps an
equal share of analysed frames, and what is not analysed is counted as its own drop.

The pool is ``FakeSlowPool``: the real FacePool needs Ray and the models, and what is tested
here is the hub's scheduling in front of it, which needs a pool slower than the cameras.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pipelines.config import LiveConfig
from pipelines.images import encode_jpeg
from pipelines.live.cameras import CameraSpec
from pipelines.schemas import EmbedderInfo, FaceBatch, FaceDetections, Quality
from serve.fair_share import FairShare
from serve.ingest import CameraRunner
from serve.sources import Pacer

JPEG = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
INFO = EmbedderInfo("dlib-resnet", "test", 4)


def no_faces() -> FaceBatch:
    z = np.zeros(0, np.float32)
    quality = Quality(np.zeros(0, bool), np.zeros(0, object), z, z, z, z, z)
    return FaceBatch(FaceDetections.empty(), quality, np.zeros((0, 4), np.float32), INFO, 1)


class FakeSlowPool:
    """A pool that analyses one frame at a time in ``cost_s`` (much slower than the cameras
    push), in arrival order, and records how many frames it held at once and whose they
    were (each camera's frames carry its number as their pixel value)."""

    def __init__(self, cost_s: float):
        self.cost_s, self.lock = cost_s, asyncio.Lock()
        self.held = self.most_held = 0
        self.by_camera: dict[int, int] = {}

    async def analyse(self, frame: np.ndarray, regions: np.ndarray | None) -> FaceBatch:
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        try:
            async with self.lock:
                await asyncio.sleep(self.cost_s)
                cam = int(frame[0, 0, 0])
                self.by_camera[cam] = self.by_camera.get(cam, 0) + 1
                return no_faces()
        finally:
            self.held -= 1


async def _overload(n_cams: int, share: FairShare | None, seconds: float):
    pool = FakeSlowPool(cost_s=0.02)  # 50 frames/s for all cameras together
    policy = LiveConfig(detect_every=1)
    runners = [
        CameraRunner(CameraSpec(id=f"cam{i}", url="push"), policy, pool.analyse, None, share=share)
        for i in range(n_cams)
    ]
    pushed = [0] * n_cams

    async def pusher(i: int, runner: CameraRunner, every_s: float) -> None:
        async def decode(data: bytes) -> np.ndarray:
            return np.full((8, 8, 3), i, np.uint8)

        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            await runner.push(JPEG, decode, wait=False)
            pushed[i] += 1
            await asyncio.sleep(every_s)

    await _warm_up(pool)
    for r in runners:
        r.pacer = Pacer(1e6)  # every pushed frame is due: the pool is the bottleneck
        r.start()
    # camera 0 pushes four times as often as the others: it must not take more places
    await asyncio.gather(*(pusher(i, r, 0.005 if i == 0 else 0.02) for i, r in enumerate(runners)))
    await asyncio.sleep(0.3)  # what is at the pool finishes
    statuses = [r.status() for r in runners]
    for r in runners:
        await r.stop()
    return pool, statuses, pushed


async def _warm_up(pool: FakeSlowPool) -> None:
    """One frame through a camera of its own: the first push and result import what they
    need (seconds on a loaded machine), which must not eat the cameras' measured time."""
    runner = CameraRunner(CameraSpec(id="warm-up", url="push"), LiveConfig(), pool.analyse, None)
    runner.start()

    async def decode(data: bytes) -> np.ndarray:
        return np.full((8, 8, 3), 255, np.uint8)

    await runner.push(JPEG, decode, wait=True)
    await runner.stop()
    pool.by_camera.pop(255)


@pytest.mark.timeout(30)
def test_an_overloaded_pool_gives_every_camera_an_equal_share_and_counts_its_drops():
    share = FairShare(capacity=3)
    pool, statuses, pushed = asyncio.run(_overload(6, share, seconds=1.5))
    analysed = [s["frames_analysed"] for s in statuses]
    assert pool.most_held <= 3  # the bound holds, whatever the cameras push
    assert sum(analysed) >= 20  # 75 at most in 1.5 s; fewer on a loaded machine
    assert min(analysed) >= 0.8 * max(analysed), analysed  # equal shares, camera 0 too
    assert [pool.by_camera[i] for i in range(6)] == analysed
    for s, n in zip(statuses, pushed, strict=True):
        assert s["drops"] > 0  # each camera's own overload is its own count
        # every pushed frame is analysed or a counted drop (one may still wait in its slot)
        assert n - 1 <= s["frames_analysed"] + s["drops"] <= n, (s, n)
    assert share.busy == 0 and share.waiting == 0  # stopping gave every place back


@pytest.mark.timeout(30)
def test_without_a_shared_bound_each_camera_keeps_its_own_depth_at_the_pool():
    """The runner's own depth (2) alone lets 6 cameras hold 12 frames at the pool: the
    queue a frame waits in grows with the number of cameras."""
    pool, _, _ = asyncio.run(_overload(6, None, seconds=0.5))
    assert pool.most_held == 12


@pytest.mark.timeout(10)
def test_places_go_to_the_camera_that_waited_longest():
    async def main() -> list[str]:
        share = FairShare(capacity=1)
        await share.acquire("a")
        order: list[str] = []

        async def take(cam: str) -> None:
            await share.acquire(cam)
            order.append(cam)

        tasks = []
        for cam in ("b", "c", "d"):
            tasks.append(asyncio.ensure_future(take(cam)))
            await asyncio.sleep(0)  # b begins to wait first, then c, then d
        for _ in range(3):
            share.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        share.release()
        assert share.busy == 0 and dict(share.granted) == {"a": 1, "b": 1, "c": 1, "d": 1}
        return order

    assert asyncio.run(main()) == ["b", "c", "d"]


@pytest.mark.timeout(10)
def test_a_camera_cancelled_while_waiting_leaves_no_place_taken():
    async def main() -> FairShare:
        share = FairShare(capacity=1)
        await share.acquire("a")
        waiter = asyncio.ensure_future(share.acquire("b"))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        share.release()
        return share

    share = asyncio.run(main())
    assert share.busy == 0 and share.waiting == 0
    with pytest.raises(ValueError):
        FairShare(0)
