"""A priority gate: one model call at a time per replica, live callers before archive ones.

Live frames have a latency budget; archive frames only have throughput. Archive work is
split into small chunks that each pass the gate, so a live frame waits at most one chunk.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
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
