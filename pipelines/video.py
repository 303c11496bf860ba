"""Video files: find them, probe them, and read sampled frames with decord.

Archive files are split into time segments so that one long file spreads over workers.
Every failure becomes a ``VideoError`` with a reason a person can act on; a bad file never
takes the rest of a job down with it.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import FacewatchError
from pipelines.paths import resolved

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


class VideoError(FacewatchError, RuntimeError):
    """A video cannot be read. ``reason`` is short and stable (for tables and Parquet)."""

    def __init__(self, path: str, reason: str, detail: str = ""):
        self.path, self.reason, self.detail = path, reason, detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))

    def __reduce__(
        self,
    ) -> tuple[type[VideoError], tuple[str, str, str]]:  # cross Ray's process boundary intact
        return (VideoError, (self.path, self.reason, self.detail))


@dataclass(frozen=True)
class VideoInfo:
    path: str
    n_frames: int
    fps: float
    width: int
    height: int
    backend: str = "decord"  # "pyav" for damaged files decord cannot index
    frames_declared: int = 0  # what the container claims, when it differs from n_frames

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps if self.fps > 0 else 0.0


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, stop)`` of a file, sampled every ``step`` frames (fractional)."""

    path: str
    file_id: str  # content hash of the file
    index: int
    frame_indices: tuple[int, ...]
    fps: float
    backend: str = "decord"


def find_videos(paths: list[Path], extensions: tuple[str, ...] = DEFAULT_EXTENSIONS) -> list[Path]:
    """Files given directly are kept whatever their name; folders are searched recursively
    (symbolic links to folders are not followed, so a link loop cannot trap the walk)."""
    found: list[Path] = []
    exts = {e.lower() for e in extensions}
    for p in paths:
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in exts:
                        found.append(Path(root) / name)
        else:
            found.append(p)
    seen: set[Path] = set()
    unique = []
    for f in found:
        key = resolved(f)
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _open(path: str) -> Any:  # a decord.VideoReader
    import decord

    if not os.path.isfile(path):
        raise VideoError(path, _missing(path))
    if os.path.getsize(path) == 0:
        raise VideoError(path, "empty file")
    try:
        return decord.VideoReader(path, num_threads=1)
    except Exception as exc:  # noqa: BLE001 - decord raises RuntimeError and DECORDError
        raise VideoError(path, "not a readable video", _short(exc)) from None


def _missing(path: str) -> str:
    """Why a path is not a file we can open."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        if os.path.islink(path):
            return "a broken symbolic link"
        return "not found"
    return "not a regular file"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def probe(path: str) -> VideoInfo:
    """Frame count, rate and size. A damaged file that decord cannot index (a recording cut
    off mid-write, say) is read with PyAV instead, up to where it breaks."""
    try:
        reader = _open(path)
    except VideoError as exc:
        if exc.reason != "not a readable video":
            raise
        return _probe_pyav(path, exc)
    n = len(reader)
    fps = float(reader.get_avg_fps() or 0.0)
    if n <= 0:
        raise VideoError(path, "no video frames")
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(path, "unknown frame rate")
    h, w = reader[0].shape[:2]
    return VideoInfo(path, n, fps, int(w), int(h))


def _probe_pyav(path: str, first: VideoError) -> VideoInfo:
    import av

    try:
        container = av.open(path)
    except Exception:  # noqa: BLE001 - PyAV cannot read it either: the original reason stands
        raise first from None
    with container:
        if not container.streams.video:
            raise VideoError(path, "no video stream")
        if _is_still_image(container):
            raise VideoError(path, "not a video", f"a {container.format.name} still image")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 0)
        declared = int(stream.frames or 0)
        n, size = 0, (0, 0)
        try:
            for frame in container.decode(stream):
                n, size = n + 1, (frame.width, frame.height)
        except Exception:  # noqa: BLE001 - the break is what we are measuring
            pass
    if n == 0 or fps <= 0:
        raise first
    return VideoInfo(path, n, fps, size[0], size[1], "pyav", declared)


def _is_still_image(container: Any) -> bool:
    """FFmpeg opens a photo as a one-frame "video" (jpeg_pipe, png_pipe, image2)."""
    name = container.format.name or ""
    return name.endswith("_pipe") or name.startswith("image2")


def sample_indices(n_frames: int, fps: float, sample_fps: float) -> list[int]:
    """Frame indices at ``sample_fps`` (every frame when the video is slower)."""
    if sample_fps >= fps:
        return list(range(n_frames))
    step = fps / sample_fps
    count = int(math.floor((n_frames - 1) / step)) + 1
    return [min(n_frames - 1, int(round(i * step))) for i in range(count)]


def plan_segments(
    info: VideoInfo, file_id: str, sample_fps: float, segment_s: float
) -> list[Segment]:
    idx = sample_indices(info.n_frames, info.fps, sample_fps)
    if info.backend == "pyav":  # read sequentially, so in one piece
        return [Segment(info.path, file_id, 0, tuple(idx), info.fps, "pyav")]
    per = max(1, int(round(segment_s * min(sample_fps, info.fps))))
    return [
        Segment(info.path, file_id, k, tuple(idx[i : i + per]), info.fps)
        for k, i in enumerate(range(0, len(idx), per))
    ]


def read_frames(segment: Segment, chunk: int = 8) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (frame indices, frames (B, H, W, 3) uint8) for a segment, ``chunk`` at a time.

    A file that breaks part-way raises ``VideoError("truncated or corrupt")`` after yielding
    everything before the break, so callers keep what was read.
    """
    if segment.backend == "pyav":
        yield from _read_pyav(segment, chunk)
        return
    reader = _open(segment.path)
    indices = list(segment.frame_indices)
    for start in range(0, len(indices), chunk):
        part = indices[start : start + chunk]
        try:
            frames = reader.get_batch(part).asnumpy()
        except Exception as exc:  # noqa: BLE001
            yield from _read_one_by_one(reader, segment.path, part, exc)
            return
        yield part, frames


def _read_one_by_one(
    reader: Any, path: str, part: list[int], first_exc: BaseException
) -> Iterator[tuple[list[int], np.ndarray]]:
    good_idx: list[int] = []
    good: list[np.ndarray] = []
    for i in part:
        try:
            good.append(reader[i].asnumpy())
            good_idx.append(i)
        except Exception:  # noqa: BLE001
            break
    if good:
        yield good_idx, np.stack(good)
    raise VideoError(
        path, "truncated or corrupt", f"at frame {part[len(good)]}: {_short(first_exc)}"
    )


def _read_pyav(segment: Segment, chunk: int) -> Iterator[tuple[list[int], np.ndarray]]:
    import av

    wanted = set(segment.frame_indices)
    idx: list[int] = []
    frames: list[np.ndarray] = []
    with av.open(segment.path) as container:
        try:
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                if i in wanted:
                    idx.append(i)
                    frames.append(frame.to_ndarray(format="rgb24"))
                if len(idx) == chunk:
                    yield idx, np.stack(frames)
                    idx, frames = [], []
        except Exception:  # noqa: BLE001 - damaged tail: stop where it breaks
            pass
    if idx:
        yield idx, np.stack(frames)


def video_jpegs(path: Path | str, every: int = 1, quality: int = 90) -> list[bytes]:
    """Every ``every``-th frame of a video as JPEG bytes: what a camera that pushes frames
    sends (used to drive the live service in tests, benchmarks and drills)."""
    import av

    from pipelines.images import encode_jpeg

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    out = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % every == 0:
                out.append(encode_jpeg(frame.to_ndarray(format="rgb24"), quality))
    return out
