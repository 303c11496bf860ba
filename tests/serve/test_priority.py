"""The pool's priority gate: live work goes before queued archive work."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

from serve.priority import ARCHIVE, ARCHIVE_NICE, LIVE, PriorityGate


@pytest.mark.timeout(10)
def test_live_overtakes_queued_archive_work():
    async def scenario() -> list[str]:
        gate, order = PriorityGate(), []
        hold = asyncio.Event()

        async def job(name: str, prio: int, wait: asyncio.Event | None = None):
            async with gate.slot(prio):
                order.append(name)
                if wait is not None:
                    await wait.wait()

        first = asyncio.create_task(job("archive-0", ARCHIVE, hold))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(job(f"archive-{i}", ARCHIVE)) for i in (1, 2)]
        await asyncio.sleep(0)
        live = asyncio.create_task(job("live", LIVE))
        await asyncio.sleep(0)
        assert gate.queued == 3
        hold.set()
        await asyncio.wait_for(asyncio.gather(first, live, *rest), 5)
        return order

    assert asyncio.run(scenario()) == ["archive-0", "live", "archive-1", "archive-2"]


@pytest.mark.timeout(10)
def test_a_cancelled_waiter_does_not_block_the_gate():
    async def scenario() -> bool:
        gate = PriorityGate()
        hold = asyncio.Event()

        async def holder():
            async with gate.slot(ARCHIVE):
                await hold.wait()

        async def quick():
            async with gate.slot(LIVE):
                return True

        h = asyncio.create_task(holder())
        await asyncio.sleep(0)
        doomed = asyncio.create_task(quick())
        await asyncio.sleep(0)
        doomed.cancel()
        hold.set()
        await h
        return await asyncio.wait_for(quick(), 2)

    assert asyncio.run(scenario())


@pytest.mark.timeout(10)
def test_archive_waits_while_a_live_request_is_in_flight():
    from serve.priority import LiveActivity

    async def scenario() -> list[str]:
        live, order = LiveActivity(), []
        release = asyncio.Event()

        async def live_request():
            async with live.request():
                await release.wait()  # e.g. still collecting its batch
                order.append("live")

        async def archive_chunk():
            await live.idle()
            order.append("archive")

        first = asyncio.create_task(live_request())
        await asyncio.sleep(0)
        waiting = asyncio.create_task(archive_chunk())
        await asyncio.sleep(0)
        assert not waiting.done() and live.inflight == 1
        release.set()
        await asyncio.wait_for(asyncio.gather(first, waiting), 5)
        await asyncio.wait_for(archive_chunk(), 1)  # idle: no wait at all
        return order

    assert asyncio.run(scenario()) == ["live", "archive", "archive"]


@pytest.mark.timeout(30)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux")
def test_archive_worker_process_is_niced_in_every_thread():
    code = (
        "import os, threading\n"
        "t = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True); t.start()\n"
        "from serve.priority import lower_cpu_priority\n"
        "lower_cpu_priority()\n"
        "print(sorted({os.getpriority(os.PRIO_PROCESS, int(x))"
        " for x in os.listdir('/proc/self/task')}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=25
    ).stdout
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert out.strip() == str([max(base, ARCHIVE_NICE)])


@pytest.fixture(scope="module")
def pool_without_serve():
    """The FacePool class itself (not deployed: no Ray), with the real engine loaded."""
    from pipelines.config import Settings
    from serve.pool import FacePool

    settings = Settings.model_validate({"pool": {"archive_share_while_live": 0.25}})
    return FacePool.func_or_class(settings.model_dump(mode="json"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("live_recent", [True, False])
def test_archive_rests_to_its_share_while_cameras_are_live(
    pool_without_serve, monkeypatch, live_recent
):
    import time

    import serve.pool as pool_module

    pool = pool_without_serve
    pool._last_live = time.monotonic() if live_recent else float("-inf")
    rests: list[float] = []

    async def record_sleep(s: float) -> None:
        rests.append(s)

    monkeypatch.setattr(pool_module, "rest", record_sleep)
    frames = [np.zeros((120, 160, 3), np.uint8)] * 3
    before = pool.stats["busy_s"]
    out = asyncio.run(pool.archive(frames, with_crops=False))
    assert out.n_frames == 3
    busy = pool.stats["busy_s"] - before
    if live_recent:
        # one frame per call while live, each followed by a rest of 3x its time (share 1/4)
        assert len(rests) == 3
        assert sum(rests) == pytest.approx(3 * busy, rel=0.3)
    else:
        assert rests == []
