"""Cut a short MP4 excerpt around a sighting from its original file (PyAV, no re-encoding).

An investigator judges a sighting by watching it, and an evidence bundle carries the
excerpt of each confirmed one. Re-encoding would change every pixel and cost seconds per
clip, so the video packets are copied as they are: the excerpt starts at the keyframe at
or before ``start_s`` (so it decodes from its first frame) and ends after ``end_s``. Its
timestamps are shifted to start at zero; ``Clip.offset_s`` says where in the original file
the excerpt begins, in a search's times (seconds from the file's first frame, whatever its
first timestamp), so a face box or a time span can be placed on it. Audio is left out:
the faces are the evidence, and a copied audio track is one more thing to disclose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from pipelines.errors import FacewatchError

MARGIN_S = 3.0  # seconds either side of a sighting
MAX_CLIP_S = 120.0


class ClipError(FacewatchError, ValueError):
    """The excerpt cannot be cut (unreadable file, no video, an empty span)."""


@dataclass(frozen=True)
class Clip:
    path: Path
    offset_s: float  # where in the original file the excerpt starts
    duration_s: float


def clip_span(start_s: float, end_s: float, margin_s: float = MARGIN_S) -> tuple[float, float]:
    """The span of a sighting's clip: ``margin_s`` either side, at most ``MAX_CLIP_S``."""
    lo = max(0.0, float(start_s) - margin_s)
    return lo, min(float(end_s) + margin_s, lo + MAX_CLIP_S)


def cut_clip(source: Path, start_s: float, end_s: float, dest: Path) -> Clip:
    """Copy the video packets from the keyframe at or before ``start_s`` to ``end_s``."""
    if not end_s > start_s >= 0:
        raise ClipError(f"an empty span {start_s:.2f}-{end_s:.2f} s")
    try:
        src = av.open(str(source))
    except (av.FFmpegError, OSError) as exc:
        raise ClipError(f"{Path(source).name}: cannot open ({exc})") from None
    try:
        if not src.streams.video:
            raise ClipError(f"{Path(source).name}: no video stream")
        return _copy_packets(src, src.streams.video[0], start_s, end_s, Path(dest))
    finally:
        src.close()


def _copy_packets(
    src: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    start_s: float,
    end_s: float,
    dest: Path,
) -> Clip:
    tb = stream.time_base
    if tb is None:  # a demuxed stream has one; PyAV types it optional
        raise ClipError("the video stream has no time base")
    # A search's times count from the first frame (frame index / fps); a file's timestamps
    # may start later (0.852 s in examples/short_hamilton_clip.mp4). Spans and the offset
    # are in the search's times, so a face box is drawn on the frame it was found in.
    origin = float(stream.start_time * tb) if stream.start_time else 0.0
    start_s, end_s = start_s + origin, end_s + origin
    src.seek(int(start_s / tb), stream=stream, backward=True, any_frame=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    first = last = None
    with av.open(str(dest), "w", format="mp4") as out:
        ostream = out.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is None or packet.pts is None:
                continue  # the demuxer's end-of-stream marker
            if first is None:
                if not packet.is_keyframe:
                    continue
                first = packet.pts
            if packet.pts * tb > end_s and packet.is_keyframe:
                break
            if packet.pts * tb > end_s + 1.0:
                break
            packet.pts -= first
            packet.dts -= first
            packet.stream = ostream
            last = max(last or 0, packet.pts + (packet.duration or 0))
            out.mux(packet)
    if first is None:
        dest.unlink(missing_ok=True)
        raise ClipError(f"no video at {start_s:.2f} s")
    return Clip(dest, max(0.0, float(first * tb) - origin), float((last or 0) * tb))
