"""One running camera: source -> newest-frame slot -> shared pool -> live analysis -> alerts.

A camera analyses its frames in order, with at most ``depth`` frames at the pool at once,
so a camera keeps up with its fps even when one pool call takes longer than one frame
interval; meanwhile newer frames replace older waiting ones (counted as drops). Results are
applied to the tracker strictly in frame order. Everything here runs on the hub's event
loop except the PyAV reader thread, which hands frames over with ``call_soon_threadsafe``.

A camera that cannot start (say a ``${CAM...}`` variable is not set) starts nothing and
shows the error; a stopped camera fails every frame a pusher still waits for (503).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np

from pipelines.config import LiveConfig
from pipelines.images import ImageTooLarge, check_image_header
from pipelines.live.analyser import AlertDraft, Face, LiveAnalyser
from pipelines.live.cameras import (
    CameraError,
    CameraSpec,
    expand_secrets,
    redact_url,
    scrub_secrets,
)
from pipelines.live.working_size import Scale, in_original, scale_between
from pipelines.match import Matcher
from pipelines.schemas import FaceBatch
from serve import metrics
from serve.fair_share import FairShare
from serve.sources import Backoff, FrameSlot, Pacer, PendingFrame, SourceState, StreamReader
from serve.stage_times import StageTimes, p50_p99

logger = logging.getLogger(__name__)

STATS_WINDOW_S = 10.0
PUSH_CONNECTED_S = 5.0  # a push camera counts as connected this long after its last frame


class AlertSink(Protocol):
    async def alert(self, draft: AlertDraft, camera: CameraSpec) -> None: ...

    async def drill_face(self, camera: CameraSpec, track_id: int, face: Face) -> None: ...


# (frame, regions): regions None searches the whole frame, else only around those boxes
Analyse = Callable[[np.ndarray, np.ndarray | None], Awaitable[FaceBatch]]
# a pushed frame's bytes -> its image, or (image decoded reduced, original (width, height))
Decode = Callable[[bytes], Awaitable[np.ndarray | tuple[np.ndarray, tuple[int, int]]]]


class CameraRunner:
    def __init__(
        self,
        spec: CameraSpec,
        policy: LiveConfig,
        analyse: Analyse,
        sink: AlertSink,
        origin: str = "api",
        depth: int = 2,
        share: FairShare | None = None,
    ):
        """``share``: the places at the pool that this camera takes turns for with the
        others (the fleet's); None: only this camera's own ``depth`` bounds it."""
        self.spec, self.policy, self.origin = spec, policy, origin
        self.share = share
        self.fps = spec.fps or policy.fps
        self._analyse, self._sink = analyse, sink
        self.analyser = LiveAnalyser(spec.id, policy, epoch=f"{time.time():.6f}")
        self.slot = FrameSlot()
        self.pacer = Pacer(self.fps)  # push cameras; readers pace themselves
        self.source = SourceState(state="waiting" if spec.kind == "push" else "starting")
        self.reader: StreamReader | None = None
        self.max_pixels, self.push_queue = policy.max_push_pixels, policy.push_queue
        self._raw: deque[tuple[PendingFrame, Decode]] = deque()  # pushed, not yet decoded
        self._raw_ready = asyncio.Event()
        self.decode_dropped = 0  # pushed frames replaced by a newer one before decoding
        self._inflight = asyncio.Semaphore(depth)
        self._order: asyncio.Queue = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._waiting: set[asyncio.Future] = set()  # pushed frames whose pusher waits
        self._closed: str | None = None  # why frames are refused: stopped, or never started
        self.start_error: str | None = None
        self.failed_at: float | None = None  # monotonic time of the failed start
        self._seq = 0
        self._dispatched = 0  # frames sent to the pool, for detect_every
        self.region_frames = 0  # of which searched only around the last faces
        self._last_faces: tuple[float, np.ndarray] | None = None  # (t, boxes) last result
        self._done_at: deque[float] = deque(maxlen=1024)
        self._latency_ms: deque[float] = deque(maxlen=256)
        self.stage_times = StageTimes()
        self.errors = 0
        self.skipped = 0
        self.list_info: dict[str, Any] = {}

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start reading and analysing. The URL's secrets are expanded first, so a camera
        that cannot start raises CameraError having started nothing."""
        loop = asyncio.get_running_loop()
        if self.spec.kind != "push":
            self.reader = self._make_reader(loop, expand_secrets(self.spec.url))
            self.source = self.reader.state
        self._spawn(self._produce())
        self._spawn(self._consume())
        if self.spec.kind == "push":
            self._spawn(self._decode_pushed())
        if self.reader is not None:
            self.reader.start()

    def fail(self, message: str) -> None:
        """The camera could not start: it shows ``message`` (already scrubbed) as its error
        and refuses frames. Nothing runs, so there is nothing to stop."""
        self._closed, self.start_error = "could not start", message[:300]
        self.failed_at = time.monotonic()
        self.source = SourceState(state="error")
        self.source.error(self.start_error)

    def _make_reader(self, loop: asyncio.AbstractEventLoop, url: str) -> StreamReader:
        def deliver(image: np.ndarray, t: float, received_at: float, scale: Scale) -> None:
            loop.call_soon_threadsafe(self._offer_image, image, t, received_at, scale)

        return StreamReader(
            self.spec.id,
            url,
            is_file=self.spec.kind == "file",
            loop_file=self.spec.loop,
            fps=self.fps,
            deliver=deliver,
            backoff=Backoff(self.policy.reconnect_initial_s, self.policy.reconnect_max_s),
            public_url=redact_url(self.spec.url),
            allowed_networks=self.policy.allowed_camera_networks,
            max_side=self.policy.decode_max_side,
        )

    async def stop(self) -> None:
        self._closed = self._closed or "was stopped"
        if self.reader is not None:
            self.reader.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for done in list(self._waiting):  # frames taken for analysis included
            if not done.done():
                done.set_exception(self._refusal())
        self.slot.clear("camera removed")
        self._raw.clear()  # their pushers, if they wait, were refused above
        while not self._order.empty():
            frame, task = self._order.get_nowait()
            task.cancel()
            frame.resolve({"status": "dropped", "seq": frame.seq, "reason": "camera removed"})
        self.analyser.tracks.clear()  # drop every face held in memory

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            text = scrub_secrets(repr(task.exception()), public_url=redact_url(self.spec.url))
            logger.error("camera %s: task failed: %s", self.spec.id, text)

    def set_matcher(self, matcher: Matcher | None, info: dict[str, Any]) -> None:
        self.analyser.set_matcher(matcher)
        self.list_info = info

    # -- frames in --------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        self.source.frames_received += self.spec.kind == "push"
        return self._seq

    def _offer_image(self, image: np.ndarray, t: float, received_at: float, scale: Scale) -> None:
        frame = PendingFrame(self._next_seq(), t, received_at, image=image, scale=scale)
        frame.decoded_at = t  # the reader decoded it before handing it over
        self.slot.put(frame)

    def _refusal(self) -> CameraError:
        return CameraError(
            f"camera '{self.spec.id}' {self._closed}: the frame was not analysed", status=503
        )

    async def push(self, data: bytes, decode: Decode, wait: bool) -> dict:
        """A pushed frame: refused from its header (413 over ``live.max_push_pixels``, 422
        not an image), skipped (sampling), or queued for this camera's decoder; with
        ``wait``, the outcome once it is analysed or dropped. A stopped camera refuses it
        (503), also when it stops while the frame is decoded or analysed."""
        if self._closed is not None:
            raise self._refusal()
        if self.spec.kind != "push":
            raise CameraError(
                f"camera '{self.spec.id}' reads {redact_url(self.spec.url)}; "
                "it does not take pushed frames",
                status=409,
            )
        t, received_at = time.monotonic(), time.time()
        seq = self._next_seq()
        self.source.state, self.source.connected = "streaming", True
        width, height = self._check_header(data)  # skipped frames too: junk is a 422
        if not self.pacer.due(t, cost=width * height / self.policy.push_frame_pixels):
            self.skipped += 1
            return {"status": "skipped", "seq": seq, "reason": f"camera analyses {self.fps} fps"}
        done = asyncio.get_running_loop().create_future() if wait else None
        self._enqueue(PendingFrame(seq, t, received_at, data=data, done=done), decode)
        if done is None:
            return {"status": "queued", "seq": seq}
        self._waiting.add(done)
        done.add_done_callback(self._waiting.discard)
        return await done

    def _check_header(self, data: bytes) -> tuple[int, int]:
        """(width, height) from the header only, nothing decoded: a frame over the pixel
        limit costs a header read, not a decode (413); junk behind an image signature is
        an ImageError (422)."""
        try:
            return check_image_header(data, "frame", self.max_pixels)
        except ImageTooLarge as exc:
            raise CameraError(f"{exc} (live.max_push_pixels)", status=413) from None

    def _enqueue(self, frame: PendingFrame, decode: Decode) -> None:
        """Wait for this camera's decoder. Its queue is small and its own: when full, this
        camera's oldest waiting frame is dropped, never another camera's."""
        while len(self._raw) >= self.push_queue:
            old, _ = self._raw.popleft()
            self.decode_dropped += 1
            reason = "a newer frame from this camera arrived before it was decoded"
            old.resolve({"status": "dropped", "seq": old.seq, "reason": reason})
        self._raw.append((frame, decode))
        self._raw_ready.set()

    async def _decode_pushed(self) -> None:
        """This camera's decoder: one frame at a time, so a camera that floods the server
        holds at most one decode of the hub's shared decode threads; every other camera's
        frame waits behind at most one of its frames."""
        while True:
            while not self._raw:
                self._raw_ready.clear()
                await self._raw_ready.wait()
            frame, decode = self._raw.popleft()
            data, frame.data = frame.data, None
            try:
                if data is None:  # each queued frame carries its bytes once
                    raise ValueError("a pushed frame was queued without its bytes")
                decoded = await decode(data)
                if isinstance(decoded, tuple):  # decoded reduced: (image, original size)
                    frame.image, original = decoded
                    height, width = frame.image.shape[:2]
                    frame.scale = scale_between(original, (width, height))
                else:
                    frame.image = decoded
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a frame that cannot be decoded costs itself
                self.errors += 1
                self.source.error(scrub_secrets(f"pushed frame not decoded: {exc}")[:300])
                if frame.done is not None and not frame.done.done():
                    frame.done.set_exception(exc)
                continue
            frame.decoded_at = time.monotonic()
            self.slot.put(frame)

    # -- analysis ---------------------------------------------------------------------------
    async def _produce(self) -> None:
        while True:
            await self._inflight.acquire()
            frame = await self._next_frame()
            if frame.image is None:  # the decoder puts only decoded frames in the slot
                raise RuntimeError("an undecoded frame reached analysis")
            regions = self._regions(frame.t)
            self.region_frames += regions is not None
            frame.taken_at = time.monotonic()
            task = asyncio.ensure_future(self._analyse(frame.image, regions))
            task.add_done_callback(functools.partial(_stamp_returned, frame))
            if self.share is not None:
                task.add_done_callback(self.share.release_after)
            await self._order.put((frame, task))

    async def _next_frame(self) -> PendingFrame:
        """The newest frame, once this camera's turn at the pool has come (``FairShare``):
        the frame is taken only then, so a newer one that arrives while it waits for its
        turn replaces it, and what goes to the pool is as recent as it can be."""
        if self.share is None:
            return await self.slot.get()
        while True:
            await self.slot.ready()
            await self.share.acquire(self.spec.id)
            frame = self.slot.take()
            if frame is not None:
                return frame
            self.share.release()  # the slot was cleared meanwhile (the camera stops)

    def _regions(self, t: float) -> np.ndarray | None:
        """Where to look for faces in the frame taken at ``t``: None (the whole frame) on
        every ``detect_every``-th frame, and when the last result is missing or older than
        a track lives; otherwise around the faces of the last result (none there: no
        search at all, until the next whole frame)."""
        n, self._dispatched = self._dispatched, self._dispatched + 1
        every, last = self.policy.detect_every, self._last_faces
        if every <= 1 or n % every == 0 or last is None:
            return None
        if t - last[0] > self.policy.track_max_gap_s:
            return None
        return last[1]

    async def _consume(self) -> None:
        while True:
            frame, task = await self._order.get()
            try:
                batch = await task
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed pool call costs one frame
                self.errors += 1
                text = scrub_secrets(f"analysis failed: {type(exc).__name__}: {exc}")
                self.source.error(text[:300])
                frame.resolve({"status": "error", "seq": frame.seq, "reason": "analysis failed"})
                self._inflight.release()
                continue
            self._apply(frame, batch)
            self._inflight.release()

    def _apply(self, frame: PendingFrame, batch: FaceBatch) -> None:
        applying = time.monotonic()
        # the next region search is in the pool's (working) pixels; the rest in the camera's
        self._last_faces = (frame.t, batch.detections.boxes.copy())
        batch = in_original(batch, frame.scale)
        outcome = self.analyser.update(frame.t, frame.seq, frame.received_at, batch)
        frame.image = None
        now = time.monotonic()
        self._done_at.append(now)
        stages = self._time_stages(frame, applying, now)
        latency_ms = (now - frame.t) * 1000
        self._latency_ms.append(latency_ms)
        metrics.record("facewatch_camera_frames_analysed", 1, camera=self.spec.id)
        metrics.record("facewatch_frame_to_result_seconds", latency_ms / 1000, camera=self.spec.id)
        for draft in outcome.alerts:
            self._spawn(self._sink.alert(draft, self.spec))
        for track_id, face in outcome.drill_faces:
            self._spawn(self._sink.drill_face(self.spec, track_id, face))
        frame.resolve({**outcome.public(), "latency_ms": round(latency_ms, 1), "stages_ms": stages})

    def _time_stages(
        self, frame: PendingFrame, applying: float, applied: float
    ) -> dict[str, float]:
        decoded = frame.decoded_at if frame.decoded_at is not None else frame.t
        taken = frame.taken_at if frame.taken_at is not None else decoded
        returned = frame.returned_at if frame.returned_at is not None else applying
        return self.stage_times.add(frame.t, decoded, taken, returned, applying, applied)

    # -- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        recent = [t for t in self._done_at if now - t <= STATS_WINDOW_S]
        span = min(STATS_WINDOW_S, now - recent[0]) if len(recent) > 1 else 0.0
        analysed = int(self.analyser.counters["frames"])
        drops = self.slot.dropped
        src = self.source
        connected = src.connected
        if self.spec.kind == "push":
            connected = bool(self._done_at) and now - self._done_at[-1] <= PUSH_CONNECTED_S
        lat = np.asarray(self._latency_ms) if self._latency_ms else np.zeros(1)
        counters = dict(self.analyser.counters)
        return {
            **self.spec.public(),
            "fps": self.fps,
            "origin": self.origin,
            "state": src.state,
            "connected": bool(connected),
            "analysed_fps": round((len(recent) - 1) / span, 2) if span > 0 else 0.0,
            "frames_received": src.frames_received,
            "frames_analysed": analysed,
            "frames_skipped": self.skipped,
            "frames_region_searched": self.region_frames,
            "drops": drops + self.decode_dropped,
            "drop_rate": round((drops + self.decode_dropped) / max(1, drops + analysed), 4),
            "reconnects": src.reconnects,
            "errors": self.errors,
            "last_error": src.last_error,
            "last_error_at": src.last_error_at or None,
            "latency_ms": p50_p99(lat),
            "latency_stages_ms": self.stage_times.summary(),
            "active_tracks": self.analyser.active_tracks(),
            "counters": counters,
            "watchlist": self.list_info,
        }


def _stamp_returned(frame: PendingFrame, _task: asyncio.Future) -> None:
    frame.returned_at = time.monotonic()
