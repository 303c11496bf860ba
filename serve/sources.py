"""Where live frames come from, and the small rules that keep latency bounded.

- ``Pacer`` picks the frames to analyse so a camera is analysed at its configured fps,
  whatever rate it delivers at; the rest are skipped before they are even converted.
- ``FrameSlot`` holds the newest frame waiting for analysis. A newer frame replaces an
  older waiting one, and the older one is counted as dropped: under load the newest frame
  is analysed and latency never grows without bound.
- ``Backoff`` is capped exponential backoff with jitter, reset after a good connection.
- ``StreamReader`` is a thread per stream or file camera: PyAV opens and decodes, files are
  played at their own speed (looped or once), and any failure leads to a reconnect after a
  backoff delay. Cameras are independent threads: one failing source affects no other.
  Its error texts are scrubbed of the connect URL's secrets before they are kept or logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipelines.live.cameras import ANY_NETWORK, check_camera_host, redact_url, scrub_secrets
from pipelines.live.working_size import UNSCALED, Scale, scale_between, working_size

logger = logging.getLogger(__name__)


class Pacer:
    """Accept frames at about ``fps``: a frame is due a quarter interval early at most.
    A frame that costs ``cost`` frames (a pushed frame of many pixels) pushes the next one
    back by ``cost`` intervals: a camera's big frames cost its own rate, not others'."""

    def __init__(self, fps: float):
        self.interval = 1.0 / fps
        self.tolerance = 0.25 * self.interval
        self._next: float | None = None

    def due(self, t: float, cost: float = 1.0) -> bool:
        if self._next is not None and t < self._next - self.tolerance:
            return False
        interval = self.interval * max(1.0, cost)
        base = self._next if self._next is not None else t
        self._next = max(base + interval, t + interval - self.tolerance)
        return True


class Backoff:
    def __init__(self, initial_s: float, cap_s: float, jitter: float = 0.1):
        self.initial, self.cap, self.jitter = initial_s, cap_s, jitter
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * (2**self.attempt))
        self.attempt += 1
        return delay * (1 + random.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class PendingFrame:
    """A frame chosen for analysis. ``done`` (when set) receives the outcome for a pusher."""

    seq: int
    t: float  # monotonic seconds
    received_at: float  # epoch seconds
    image: np.ndarray | None = None  # RGB uint8, decoded
    data: bytes | None = None  # encoded image (pushed frames are decoded when taken)
    done: asyncio.Future | None = field(default=None, repr=False)
    scale: Scale = UNSCALED  # original pixels per pixel of ``image`` (decoded reduced)
    # monotonic stamps of its stages (serve/stage_times.py): decoded, sent to the pool,
    # answered by it
    decoded_at: float | None = None
    taken_at: float | None = None
    returned_at: float | None = None

    def resolve(self, result: dict) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(result)


class FrameSlot:
    """One waiting frame per camera; putting a newer one drops the older."""

    def __init__(self) -> None:
        self._frame: PendingFrame | None = None
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, frame: PendingFrame) -> None:
        old, self._frame = self._frame, frame
        if old is not None:
            self.dropped += 1
            old.resolve({"status": "dropped", "seq": old.seq, "reason": "a newer frame arrived"})
        self._ready.set()

    async def get(self) -> PendingFrame:
        await self.ready()
        frame = self.take()
        assert frame is not None  # ready() returns only with a frame here
        return frame

    async def ready(self) -> None:
        """Until a frame waits here (it stays here: a newer one may still replace it)."""
        while self._frame is None:
            self._ready.clear()
            await self._ready.wait()

    def take(self) -> PendingFrame | None:
        """The waiting frame, if any, without waiting."""
        frame, self._frame = self._frame, None
        return frame

    def clear(self, reason: str) -> None:
        if self._frame is not None:
            self._frame.resolve({"status": "dropped", "seq": self._frame.seq, "reason": reason})
            self._frame = None


@dataclass
class SourceState:
    """What a reader thread reports; read by the status endpoint."""

    state: str = "starting"  # connecting, streaming, reconnecting, ended, stopped, error
    connected: bool = False
    reconnects: int = 0
    last_error: str = ""
    last_error_at: float = 0.0
    frames_received: int = 0

    def error(self, message: str) -> None:
        self.last_error, self.last_error_at = message, time.time()


class StreamReader(threading.Thread):
    """Decode a stream or file with PyAV and hand due frames to ``deliver`` (thread-safe)."""

    def __init__(
        self,
        camera_id: str,
        url: str,
        is_file: bool,
        loop_file: bool,
        fps: float,
        deliver: Callable[[np.ndarray, float, float, Scale], None],
        backoff: Backoff,
        io_timeout_s: float = 5.0,
        public_url: str | None = None,
        allowed_networks: Sequence[str] = ANY_NETWORK,
        max_side: int = 0,
    ):
        """``url`` is the connect URL, secrets expanded; ``public_url`` stands in for it in
        error texts (default: ``url`` with its password redacted). A stream's host must
        resolve into ``allowed_networks`` before each connection (``check_camera_host``).
        Due frames are delivered at most ``max_side`` pixels on their longer side (0: as
        decoded), with their scale (``pipelines.live.working_size``)."""
        self.allowed_networks = list(allowed_networks)
        self.max_side = max_side
        super().__init__(name=f"camera-{camera_id}", daemon=True)
        self.camera_id, self.url, self.is_file, self.loop_file = camera_id, url, is_file, loop_file
        self.public_url = redact_url(url) if public_url is None else public_url
        self.deliver, self.backoff, self.io_timeout_s = deliver, backoff, io_timeout_s
        self.pacer = Pacer(fps)
        self.state = SourceState()
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.is_set():
            self.state.state = "connecting"
            try:
                ended = self._read_once()
            except Exception as exc:  # noqa: BLE001 - any source failure means reconnect
                text = scrub_secrets(f"{type(exc).__name__}: {exc}", self.url, self.public_url)
                self.state.error(text[:300])
                ended = False
            if self._halt.is_set():
                break
            if ended and self.is_file and self.loop_file:
                continue  # play the file again, at once
            self.state.connected = False
            if ended and self.is_file:
                self.state.state = "ended"
                return
            self.state.state = "reconnecting"
            self.state.reconnects += 1
            delay = self.backoff.next_delay()
            logger.warning(
                "camera %s: source lost (%s); reconnecting in %.1fs",
                self.camera_id,
                self.state.last_error,
                delay,
            )
            self._halt.wait(delay)
        self.state.connected = False
        self.state.state = "stopped"

    def _read_once(self) -> bool:
        """Read until the source ends: True at the end of a file, False when a stream ends."""
        import av

        if not self.is_file:  # resolved and checked before anything is sent to the host
            check_camera_host(self.url, self.allowed_networks)
        opts = {"rtsp_transport": "tcp"} if self.url.startswith("rtsp") else {}
        with av.open(self.url, options=opts, timeout=(self.io_timeout_s, self.io_timeout_s)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            clock = _PlaybackClock() if self.is_file else None
            for frame in c.decode(stream):
                if self._halt.is_set():
                    return False
                if clock is not None and frame.time is not None:
                    clock.wait(frame.time, self._halt)
                self._on_frame(frame)
        if not self.is_file:
            self.state.error("stream ended")
        return self.is_file

    def _on_frame(self, frame) -> None:
        st = self.state
        if not st.connected:
            st.connected, st.state = True, "streaming"
            self.backoff.reset()
        st.frames_received += 1
        t = time.monotonic()
        if self.pacer.due(t):
            size = working_size(frame.width, frame.height, self.max_side)
            if size != (frame.width, frame.height):  # the decoder's scaler, before RGB
                image = frame.reformat(width=size[0], height=size[1], format="rgb24")
                scale = scale_between((frame.width, frame.height), size)
                self.deliver(image.to_ndarray(), t, time.time(), scale)
            else:
                self.deliver(frame.to_ndarray(format="rgb24"), t, time.time(), UNSCALED)


class _PlaybackClock:
    """Plays a file at its own speed; resynchronises after jumps (loops, bad timestamps)."""

    def __init__(self) -> None:
        self.offset: float | None = None

    def wait(self, pts_s: float, stop: threading.Event) -> None:
        now = time.monotonic()
        if self.offset is None or not -2.0 < (self.offset + pts_s) - now < 1.0:
            self.offset = now - pts_s
        delay = self.offset + pts_s - now
        if delay > 0:
            stop.wait(delay)
