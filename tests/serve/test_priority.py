"""The pool's priority gate: live work goes before queued archive work."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

from serve.priority import ARCHIVE, ARCHIVE_NICE, LIVE, PriorityGate, lower_cpu_priority


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


@pytest.mark.timeout(20)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux")
def test_archive_threads_run_at_lower_cpu_priority():
    """The pool's archive executor thread is niced; the live thread and the caller are not."""
    from concurrent.futures import ThreadPoolExecutor

    def nice_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = nice_of_this_thread()
    with ThreadPoolExecutor(1, initializer=lower_cpu_priority) as archive:
        assert archive.submit(nice_of_this_thread).result() == max(base, ARCHIVE_NICE)
    with ThreadPoolExecutor(1) as live:
        assert live.submit(nice_of_this_thread).result() == base
    assert nice_of_this_thread() == base


@pytest.mark.timeout(30)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux")
def test_archive_worker_process_is_niced_in_every_thread():
    code = (
        "import os, threading\n"
        "t = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True); t.start()\n"
        "from serve.priority import lower_cpu_priority\n"
        "lower_cpu_priority(whole_process=True)\n"
        "print(sorted({os.getpriority(os.PRIO_PROCESS, int(x))"
        " for x in os.listdir('/proc/self/task')}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=25
    ).stdout
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert out.strip() == str([max(base, ARCHIVE_NICE)])
