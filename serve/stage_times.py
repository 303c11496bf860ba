"""Where a live frame's time goes inside the server, stage by stage.

A frame's frame-to-result time is the sum of:
- ``decode``: from receipt to decoded, including the wait for this camera's decoder and a
  place on the hub's decode threads (pushed frames; a stream reader decodes before it hands
  a frame over, so its frames start here at 0);
- ``turn``: decoded, waiting in the camera's newest-frame slot for a place at the pool (its
  own in-flight bound and the fleet's fair share);
- ``pool``: the FacePool call as the hub sees it: Ray's transport, the replica's batching
  window, its priority gate (a live frame waits behind the model call in progress) and the
  model time;
- ``order``: the result back, waiting for the camera's earlier frames to be applied first
  (results are applied in frame order) and for the event loop;
- ``apply``: tracking, matching and the alert decisions.

Kept per camera for the last ``KEEP`` analysed frames; ``GET /v1/cameras`` shows p50/p99
of each, so an operator can see which stage a long tail comes from; a pusher that waits for
its frame's result gets the frame's own stages (``stages_ms``), which bench_live collects.
The event loop's own lag (how late a short sleep wakes up) tells a blocked loop from slow
stages: ``LoopLag``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np

STAGES = ("decode", "turn", "pool", "order", "apply")
KEEP = 256


def p50_p99(values, with_max: bool = False) -> dict[str, float]:
    """p50 and p99 of ``values`` in their unit, rounded to 0.1 (and, ``with_max``, the
    largest and how many); empty for no values."""
    if not len(values):
        return {}
    p50, p99 = np.percentile(np.asarray(values, float), [50, 99])
    out = {"p50": round(float(p50), 1), "p99": round(float(p99), 1)}
    if with_max:
        out |= {"max": round(float(max(values)), 1), "n": len(values)}
    return out


class StageTimes:
    """Per-stage durations (ms) of a camera's recent frames."""

    def __init__(self, keep: int = KEEP) -> None:
        self._ms: dict[str, deque[float]] = {s: deque(maxlen=keep) for s in STAGES}

    def add(
        self,
        received: float,
        decoded: float,
        taken: float,
        returned: float,
        applying: float,
        applied: float,
    ) -> dict[str, float]:
        """One analysed frame's monotonic stamps, in stage order; returns its stages in ms."""
        stamps = (received, decoded, taken, returned, applying, applied)
        out: dict[str, float] = {}
        for stage, a, b in zip(STAGES, stamps, stamps[1:], strict=False):
            out[stage] = round(max(0.0, b - a) * 1000, 1)
            self._ms[stage].append(out[stage])
        return out

    def summary(self) -> dict[str, dict[str, float]]:
        """p50 and p99 per stage in ms (stages with no frame yet are left out)."""
        return {stage: p50_p99(values) for stage, values in self._ms.items() if values}


class LoopLag:
    """How late the event loop wakes a task that sleeps ``period_s``: near 0 when the loop
    is free; large when something blocks it (CPU work on the loop, or a starved process)."""

    def __init__(self, period_s: float = 0.05, keep: int = 1200) -> None:
        self.period_s = period_s
        self._ms: deque[float] = deque(maxlen=keep)

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.period_s)
            self._ms.append(max(0.0, time.perf_counter() - t0 - self.period_s) * 1000)

    def summary(self) -> dict[str, float]:
        return p50_p99(self._ms, with_max=True)
