"""FairShare: how many live frames are at the pool at once, shared among cameras in turn.

Without a shared bound each camera keeps up to ``depth`` frames at the pool, so N cameras
put 2N frames in its queue; when the pool cannot keep up, a frame waits behind all of them
(Little's law: 16 frames at 40 frames/s is 400 ms before its own analysis begins) and is
stale when it is answered. With the bound, the frames beyond it wait in their cameras'
newest-frame slots instead, where a newer frame replaces an older one (a drop, counted per
camera), so what reaches the pool is recent.

Cameras take turns: each camera waits with at most one frame (its producer is serial), in
the order they began to wait, and a freed place goes to the camera that has waited longest.
When every camera has a frame ready this is round robin, so each camera gets an equal share
of the analysed frames and none is starved, whatever its frame size or how often it pushes.
Plain asyncio, on the hub's event loop; no Ray.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict


class FairShare:
    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.busy = 0
        self.granted: Counter[str] = Counter()  # places given, per camera (status, tests)
        self._waiting: OrderedDict[str, asyncio.Future] = OrderedDict()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def acquire(self, camera: str) -> None:
        """A place at the pool for one frame of ``camera``; ``release`` gives it back."""
        if camera in self._waiting:
            raise RuntimeError(f"camera '{camera}' is already waiting for a place")
        if self.busy < self.capacity and not self._waiting:
            self._grant(camera)
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiting[camera] = fut
        try:
            await fut
        except asyncio.CancelledError:
            if self._waiting.get(camera) is fut:
                del self._waiting[camera]
            elif fut.done() and not fut.cancelled():  # granted, then cancelled: give it back
                self.release()
            raise

    def release(self) -> None:
        if self.busy <= 0:
            raise RuntimeError("FairShare.release without a place taken")
        self.busy -= 1
        while self.busy < self.capacity and self._waiting:
            camera, fut = self._waiting.popitem(last=False)  # the longest waiting
            if not fut.done():
                self._grant(camera)
                fut.set_result(None)

    def release_after(self, _task: asyncio.Future) -> None:
        """``release`` as a done callback of the frame's pool call."""
        self.release()

    def _grant(self, camera: str) -> None:
        self.busy += 1
        self.granted[camera] += 1
