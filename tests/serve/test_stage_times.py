"""A live frame's time by stage (serve/stage_times.py): the camera's status tells which stage
a long tail comes from, and the hub's event-loop lag tells a blocked loop from slow stages.

The runner is driven with a slow decoder and a slow pool (fakes, named as such: the real
pool needs Ray and models; what is tested is where the runner books the time)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from pipelines.config import LiveConfig
from pipelines.live.cameras import CameraSpec
from serve.ingest import CameraRunner
from serve.sources import Pacer
from serve.stage_times import STAGES, LoopLag, StageTimes
from tests.serve.test_live_regions import JPEG, batch_with

DECODE_S, POOL_S = 0.06, 0.12


async def slow_decode(data: bytes) -> np.ndarray:  # a fake decoder: only its time matters
    await asyncio.sleep(DECODE_S)
    return np.zeros((48, 64, 3), np.uint8)


async def slow_pool(frame: np.ndarray, regions: np.ndarray | None):  # a fake FacePool
    await asyncio.sleep(POOL_S)
    return batch_with(np.zeros((0, 4), np.float32))


@pytest.mark.timeout(10)
def test_stage_times_split_the_stamps_and_summarise_each_stage():
    times = StageTimes(keep=4)
    assert times.summary() == {}
    for i in range(6):  # only the last 4 are kept
        base = 100.0 * i
        one = times.add(
            base, base + 0.010, base + 0.030, base + 0.130, base + 0.135, base + 0.136 + i
        )
        assert one == pytest.approx(
            {"decode": 10, "turn": 20, "pool": 100, "order": 5, "apply": 1 + 1000 * i}, abs=0.1
        )
    out = times.summary()
    assert list(out) == list(STAGES)
    assert out["decode"]["p50"] == pytest.approx(10, abs=0.1)
    assert out["turn"]["p99"] == pytest.approx(20, abs=0.1)
    assert out["pool"]["p50"] == pytest.approx(100, abs=0.1)
    assert out["order"]["p50"] == pytest.approx(5, abs=0.1)
    # apply took 1 ms + i s for frames 2..5: the kept ones
    assert out["apply"]["p99"] == pytest.approx(1000 * 5 + 1, rel=0.01)
    assert out["apply"]["p50"] > 2000


@pytest.mark.timeout(30)
def test_a_cameras_status_books_decode_and_pool_time_to_their_stages():
    runner = CameraRunner(CameraSpec(id="cam", url="push"), LiveConfig(), slow_pool, None)

    async def run() -> list[dict]:
        runner.pacer = Pacer(1e6)  # every frame is due
        runner.start()
        try:
            return [await runner.push(JPEG, slow_decode, wait=True) for _ in range(5)]
        finally:
            await runner.stop()

    answers = asyncio.run(run())
    latencies = [a["latency_ms"] for a in answers]
    for a in answers:  # each frame's own stages, in its answer, add up to its latency
        assert set(a["stages_ms"]) == set(STAGES)
        assert sum(a["stages_ms"].values()) == pytest.approx(a["latency_ms"], abs=1.0)
    stages = runner.status()["latency_stages_ms"]
    assert set(stages) == set(STAGES)
    assert stages["decode"]["p50"] >= DECODE_S * 1000 * 0.9
    assert stages["pool"]["p50"] >= POOL_S * 1000 * 0.9
    # one frame at a time: nothing waits for a turn or for an earlier frame
    assert stages["turn"]["p99"] < 30 and stages["order"]["p99"] < 30
    total = sum(s["p50"] for s in stages.values())
    assert total == pytest.approx(float(np.median(latencies)), rel=0.15)


@pytest.mark.timeout(10)
def test_loop_lag_shows_a_blocked_event_loop():
    lag = LoopLag(period_s=0.01)

    async def run() -> None:
        task = asyncio.ensure_future(lag.run())
        await asyncio.sleep(0.1)
        time.sleep(0.25)  # something holds the loop
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(run())
    out = lag.summary()
    assert out["p50"] < 20
    assert out["max"] >= 200


@pytest.mark.timeout(10)
def test_a_slow_pool_call_is_described_with_its_frames_faces_and_cpu_time():
    import functools

    from serve.pool import slow_call_summary, with_cpu_time

    def busy(frames, regions, with_crops=False):  # stands in for engine.process_regions
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        return batch_with(np.array([[0, 0, 10, 10]] * 3, np.float32))

    frames = [np.zeros((360, 640, 3), np.uint8)] * 2 + [np.zeros((720, 1280, 3), np.uint8)]
    regions = [None, np.zeros((2, 4), np.float32), None]
    work = functools.partial(busy, frames, regions, with_crops=True)
    out, cpu = with_cpu_time(work)
    assert cpu >= 0.045
    row = slow_call_summary(work, out, wall_s=0.4, cpu_s=cpu)
    assert row["frames"] == 3 and row["whole"] == 2 and row["regions"] == 2
    assert row["sizes"] == {"640x360": 2, "1280x720": 1} and row["faces"] == 3
    assert row["wall_ms"] == 400.0 and row["cpu_ms"] >= 45
