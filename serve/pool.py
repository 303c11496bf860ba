"""FacePool: the one shared model pool, a Ray Serve deployment.

Each replica loads MTCNN and the embedder once, warms up, and serves two lanes:
- ``live(frame)``: one camera frame; calls from all cameras are batched dynamically
  (``@ray_serve.batch``) and go through the gate before any waiting archive work;
- ``archive(frames)``: a block of archive frames, processed in small chunks, each of which
  queues behind live work: a chunk starts only when no live frame is in the replica
  (queued or being batched), and while cameras are live a chunk is one frame, so a live
  frame that arrives waits for at most one archive frame. On a pool saturated by live
  work, archive work waits. Ray Data's search job reaches this lane through a handle.

Replicas, CPUs and the GPU fraction come from ``pool`` in the config (or conf/serve.yaml),
so a data engineer scales the pool without touching code.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve as ray_serve

from pipelines.config import Settings
from pipelines.engine import FaceEngine, ProbeFace, set_torch_threads
from pipelines.schemas import FaceBatch, concat_batches, split_batch
from serve import memprobe, metrics
from serve.loopback import bind_replica_to_node
from serve.memory_env import allocator, model_process_env, release_freed_memory
from serve.pool_stats import PoolReporter
from serve.priority import ARCHIVE, LIVE, LiveActivity, PriorityGate
from serve.stage_times import p50_p99

logger = logging.getLogger(__name__)

POOL_DEPLOYMENT = "FacePool"
TRIM_EVERY_S = 30.0  # at most this often, freed pages go back to the kernel after archive work
SLOW_CALL_S = 0.3  # a live model call this long is described in describe()["slow_calls"]
LIVE_RECENT_S = 2.0  # live work this recent makes archive work yield after every frame


@ray_serve.deployment(
    name=POOL_DEPLOYMENT,
    max_ongoing_requests=64,
    health_check_period_s=10,
    # replicas hold no state worth draining for: stop them without the 2 s poll
    graceful_shutdown_wait_loop_s=0.2,
)
class FacePool:
    def __init__(self, settings: dict[str, Any]):
        bind_replica_to_node()
        self.settings = Settings.model_validate(settings)
        pool = self.settings.pool
        set_torch_threads(pool.torch_threads)
        self.engine = FaceEngine(self.settings).load(warmup=True)
        self.gate = PriorityGate()
        self.live_activity = LiveActivity()
        # One model thread, at the replica's own CPU priority for both lanes: a niced
        # archive thread would hold the gate longer while a live frame waits behind it
        # (one run each, 4 cameras with an archive search: p99 630 ms with it niced, 496
        # ms without). Archive-only processes (Ray Data's decode and FaceStage workers)
        # are the ones that run niced.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facepool")
        self.chunk = pool.archive_chunk_frames
        # @serve.batch adds these setters at run time. Its type hints (ray 2.60) cover only
        # batch methods of one list argument, not this one of two (frames, regions), so
        # mypy sees a broken callable here and at _live_batch: the ignores are that gap.
        self._live_batch.set_max_batch_size(pool.live_max_batch_size)  # type: ignore[misc, attr-defined]
        self._live_batch.set_batch_wait_timeout_s(pool.live_batch_wait_s)  # type: ignore[misc, attr-defined]
        self.stats = {
            "live_frames": 0,
            "live_region_frames": 0,
            "archive_frames": 0,
            "busy_s": 0.0,
            # malloc_trim after archive work (_trim_if_due): how often, and how long it held
            # the model thread (a live frame can wait behind it)
            "trims": 0,
            "trim_s": 0.0,
            "trim_max_s": 0.0,
        }
        self.busy_by_lane = {LIVE: 0.0, ARCHIVE: 0.0}
        # a live frame's time in this replica (arrival to answer) and its batch's model
        # call: the rest of the hub's "pool" stage is Ray's transport (serve/stage_times.py)
        self.live_ms: dict[str, deque[tuple[float, float]]] = {  # (monotonic end, ms)
            "in_replica": deque(maxlen=1024),
            "model": deque(maxlen=1024),
            "model_cpu": deque(maxlen=1024),
            "gc": deque(maxlen=1024),  # Python's collections of generation 2 (hold the GIL)
        }
        self._gc_started = 0.0
        self.slow_calls: deque[dict[str, Any]] = deque(maxlen=20)  # live calls over SLOW_CALL_S
        gc.callbacks.append(self._time_gc)
        self._last_live = float("-inf")
        self._report = _start_reporter(self.busy_by_lane, self.gate.queued_by)
        logger.info("FacePool replica ready (pid %s, %s)", os.getpid(), self.engine.info.key)
        memprobe.start_if_asked("FacePool")
        self._trimmed_at = 0.0

    def _time_gc(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            took = (time.perf_counter() - self._gc_started) * 1000
            self.live_ms["gc"].append((time.monotonic(), took))

    async def _run(self, priority: int, work: functools.partial) -> FaceBatch:
        """``work`` (an engine call) on the model thread, when the gate lets it in."""
        async with self.gate.slot(priority):
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            out, cpu = await loop.run_in_executor(self.executor, with_cpu_time, work)
            took = time.perf_counter() - t0
            self.stats["busy_s"] += took
            self.busy_by_lane[priority] += took
            if priority == LIVE:
                now = time.monotonic()
                self.live_ms["model"].append((now, took * 1000))
                # the model thread's own CPU time: far below the wall time, the thread
                # waited (for a core, or for the GIL); close to it, the call was work
                self.live_ms["model_cpu"].append((now, cpu * 1000))
                if took > SLOW_CALL_S:
                    self.slow_calls.append(slow_call_summary(work, out, took, cpu))
            n = len(work.args[0])  # every engine call takes its frames first
            labels = {
                "deployment": POOL_DEPLOYMENT,
                "lane": "live" if priority == LIVE else "archive",
            }
            metrics.record("facewatch_pool_batch_size", n, **labels)
            metrics.record("facewatch_pool_frames", n, **labels)
            return out

    async def live(self, frame: np.ndarray, regions: np.ndarray | None = None) -> FaceBatch:
        """Faces in one live frame, with crops (for alerts): searched whole, or with
        ``regions`` ((n, 4) boxes) only around those boxes (none: no face, no work)."""
        t0 = time.perf_counter()
        async with self.live_activity.request():
            # ray's hints lack two-list batch methods (see __init__)
            out = await self._live_batch(frame, regions)  # type: ignore[misc, call-arg]
        self.live_ms["in_replica"].append((time.monotonic(), (time.perf_counter() - t0) * 1000))
        return out

    # ray's hints type only one-list batch methods; this one batches two lists (see __init__)
    @ray_serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)  # type: ignore[arg-type]
    async def _live_batch(  # type: ignore[misc]
        self, frames: list[np.ndarray], regions: list[np.ndarray | None]
    ) -> list[FaceBatch]:
        """Frames of all cameras in one model call, whole and region searches together."""
        self.stats["live_frames"] += len(frames)
        self.stats["live_region_frames"] += sum(r is not None for r in regions)
        self._last_live = time.monotonic()
        work = functools.partial(
            self.engine.process_regions, list(frames), list(regions), with_crops=True
        )
        return split_batch(await self._run(LIVE, work))

    async def archive(
        self,
        frames: list[np.ndarray],
        with_crops: bool = True,
        follows: list[bool] | None = None,
    ) -> FaceBatch:
        """Faces in a block of archive frames; live frames may run between chunks.

        ``follows[i]``: frame i is the next sampled frame after frame i-1 of the same video.
        Such runs are searched whole on every ``search.detect_every``-th frame and, in
        between, only around the faces of the frame before (also across chunks).
        """
        if len(frames) == 0:
            raise ValueError("archive() needs at least one frame")
        whole = whole_frames(follows, self.settings.search.detect_every, len(frames))
        parts, start, before = [], 0, None
        while start < len(frames):
            await self.live_activity.idle()  # live first, also while it is being batched
            size = self._archive_chunk()
            chunk = list(frames[start : start + size])
            flags = None if whole is None else whole[start : start + size]
            t0 = time.perf_counter()
            work = functools.partial(self.engine.process, chunk, with_crops, flags, before)
            part = await self._run(ARCHIVE, work)
            parts.append(part)
            last = part.detections.frame_index == len(chunk) - 1
            before = part.detections.select(last)
            start += size
            await self._archive_rest(time.perf_counter() - t0)
        self.stats["archive_frames"] += len(frames)
        await self._trim_if_due()
        return concat_batches(parts)

    async def _trim_if_due(self) -> None:
        """Hand the pages that archive work freed back to the kernel (``malloc_trim``), at
        most every ``TRIM_EVERY_S``, on the model thread, between model calls (a live frame
        may wait behind it: a suspect in the soak's p99 drift, not yet measured); a replica
        otherwise kept hundreds of MB it had freed (serve/memory_env.py)."""
        now = time.monotonic()
        if now - self._trimmed_at < TRIM_EVERY_S:
            return
        self._trimmed_at = now
        t0 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(self.executor, release_freed_memory)
        took = time.perf_counter() - t0
        self.stats["trims"] += 1
        self.stats["trim_s"] += took
        self.stats["trim_max_s"] = max(self.stats["trim_max_s"], took)

    async def photos(self, images: list[np.ndarray]) -> list[ProbeFace | str]:
        """Enrolment photos (bulk import): per photo its one usable face, or why it has
        none (``FaceEngine.probe_images``). Batch work: it waits for live frames, as an
        archive chunk does, and runs in the archive lane."""
        if len(images) == 0:
            return []
        await self.live_activity.idle()
        async with self.gate.slot(ARCHIVE):
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            work = functools.partial(self.engine.probe_images, list(images))
            out = await loop.run_in_executor(self.executor, work)
            self.stats["busy_s"] += time.perf_counter() - t0
        self.stats["photos"] = self.stats.get("photos", 0) + len(images)
        await self._archive_rest(time.perf_counter() - t0)
        return out

    async def _archive_rest(self, took_s: float) -> None:
        """While cameras are live, keep archive work to its share of this replica's time:
        after a call that took ``took_s``, rest long enough for the share to hold. On two
        cores the gate alone is not enough: archive work that fills every idle moment
        also takes the CPU from the hub and the HTTP proxy. Measured with 4 cameras at
        5 fps (p99 alone 350-360 ms): no cap 743 ms, share 0.15 575 ms, 0.1 592 ms, 0.08
        503-532 ms, the archive then analysing about 4 frames a second."""
        share = self.settings.pool.archive_share_while_live
        if share < 1.0 and time.monotonic() - self._last_live < LIVE_RECENT_S:
            await rest(took_s * (1.0 / share - 1.0))

    def _archive_chunk(self) -> int:
        """Frames per archive model call: one while cameras are live (a live frame then
        waits behind at most one archive frame), the configured chunk otherwise."""
        if time.monotonic() - self._last_live < LIVE_RECENT_S:
            return 1
        return self.chunk

    def describe(self, window_s: float = 60.0) -> dict[str, Any]:
        """What the replica is and has done; ``live_ms`` over the last ``window_s``."""
        since = time.monotonic() - window_s
        return {
            "embedder": self.engine.info.key,
            "dim": self.engine.info.dim,
            "device": str(self.engine.device),
            "pid": os.getpid(),
            "allocator": allocator(),  # serve/memory_env.py
            "slow_calls": list(self.slow_calls),
            "granted": dict(self.gate.granted),
            **self.stats,
            "live_ms": {
                k: p50_p99([ms for t, ms in v if t >= since], with_max=True)
                for k, v in self.live_ms.items()
            },
        }

    def check_health(self) -> None:
        if not self.engine._loaded:
            raise RuntimeError("models not loaded")


def _start_reporter(busy_by_lane: dict[int, float], queued) -> asyncio.Task | None:
    """This replica's metrics and status row, every few seconds (serve.pool_stats)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # built outside an event loop (a test): nothing to report to
        return None
    return loop.create_task(PoolReporter(POOL_DEPLOYMENT, busy_by_lane, queued).run())


def slow_call_summary(work: functools.partial, out: FaceBatch, wall_s: float, cpu_s: float) -> dict:
    """What a slow live model call held: its frames (whole or region-searched, by size),
    the regions and the faces found, with its wall and CPU time."""
    frames, regions = work.args[0], work.args[1]
    shapes = Counter(f"{f.shape[1]}x{f.shape[0]}" for f in frames)
    return {
        "at": round(time.time(), 1),
        "wall_ms": round(wall_s * 1000, 1),
        "cpu_ms": round(cpu_s * 1000, 1),
        "frames": len(frames),
        "whole": sum(r is None for r in regions),
        "regions": int(sum(len(r) for r in regions if r is not None)),
        "sizes": dict(shapes),
        "faces": len(out.detections),
    }


def with_cpu_time(work: functools.partial) -> tuple[Any, float]:
    """``work()`` and the CPU seconds this thread spent on it."""
    c0 = time.thread_time()
    out = work()
    return out, time.thread_time() - c0


def whole_frames(follows: list[bool] | None, every: int, n: int) -> list[bool] | None:
    """Which frames to search whole: each one that follows no frame, and every ``every``-th
    of a run of following frames. None: all of them."""
    if follows is None or every <= 1:
        return None
    if len(follows) != n:
        raise ValueError(f"follows has {len(follows)} flags for {n} frames")
    whole, since = [], 0
    for i, f in enumerate(follows):
        since = since + 1 if (f and i > 0) else 0
        whole.append(since % every == 0)
    return whole


async def rest(seconds: float) -> None:
    """Where archive work rests (a seam for tests: patching asyncio.sleep itself would catch
    every other sleeper in the process)."""
    await asyncio.sleep(seconds)


def pool_options(settings: Settings, gpus_available: bool) -> dict[str, Any]:
    """Deployment options from config: replicas, CPUs, and the GPU fraction."""
    pool = settings.pool
    num_gpus = pool.num_gpus
    if num_gpus == 0 and gpus_available and pool.device in ("auto", "cuda"):
        num_gpus = round(1.0 / pool.num_replicas, 3)  # share one GPU across replicas
    options: dict[str, Any] = {"num_cpus": pool.num_cpus, "num_gpus": num_gpus}
    preload = model_process_env()  # jemalloc in the model processes (serve/memory_env.py)
    if preload:
        options["runtime_env"] = {"env_vars": preload}
    if settings.placement.pool:  # pool nodes of a cluster (serve/placement.py)
        options["resources"] = dict(settings.placement.pool)
    return {"num_replicas": pool.num_replicas, "ray_actor_options": options}


def build_pool(settings: Settings, gpus_available: bool = False):
    """The FacePool application bound to ``settings`` (nothing is loaded until deployed)."""
    options = pool_options(settings, gpus_available)
    return FacePool.options(**options).bind(  # type: ignore[attr-defined]  # @serve.deployment makes it a Deployment
        settings.model_dump(mode="json")
    )
