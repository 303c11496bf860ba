"""A priority gate: one model call at a time per replica, live callers before archive ones.

Live frames have a latency budget; archive frames only have throughput. Archive work is
split into small chunks that each pass the gate, so a live frame waits at most one chunk.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
from contextlib import asynccontextmanager

LIVE = 0
ARCHIVE = 1


class PriorityGate:
    def __init__(self) -> None:
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()
        self.granted = {LIVE: 0, ARCHIVE: 0}

    @asynccontextmanager
    async def slot(self, priority: int):
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if not self._busy and not self._waiting:
            self._busy = True
        else:
            fut = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), fut))
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._release()  # granted just as we were cancelled: pass it on
                raise
        self.granted[priority] += 1

    def _release(self) -> None:
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)
                return
        self._busy = False

    @property
    def queued(self) -> int:
        return sum(1 for _, _, f in self._waiting if not f.done())

    def queued_by(self, priority: int) -> int:
        """Calls of one lane waiting for the gate."""
        return sum(1 for p, _, f in self._waiting if p == priority and not f.done())


class LiveActivity:
    """Counts live requests in a replica (from arrival, including time spent collecting a
    batch, when they are not yet waiting at the gate). Archive work waits until none is
    in flight: the gate alone cannot see a live frame that is still being batched, and on
    a saturated pool every archive frame would be a live frame's delay."""

    def __init__(self) -> None:
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @asynccontextmanager
    async def request(self):
        self.inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()

    async def idle(self) -> None:
        await self._idle.wait()


ARCHIVE_NICE = 19  # lowest priority: Ray already runs every worker at niceness 15 (its
# worker_niceness), so archive work must go lower still to yield to live work


def lower_cpu_priority(nice: int = ARCHIVE_NICE) -> None:
    """Make this process yield the CPU to live work: for archive-only Ray workers (decode,
    FaceStage), never for pool replicas, where a slowed archive call would hold the gate
    while a live frame waits behind it.

    Linux niceness is per thread, so every thread is set; threads started later inherit it.
    Priority is only ever lowered, so repeated calls are harmless; where the OS refuses,
    this is a no-op and priority is left to the gate alone.
    """
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the calling thread is what we can reach
        tids = [threading.get_native_id()]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except (AttributeError, OSError):  # the thread is gone, or not allowed
            pass
