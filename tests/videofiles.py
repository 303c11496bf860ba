"""Video files the tests make from the shared clips at test time (never committed)."""

from __future__ import annotations

from pathlib import Path


def remux(src: Path, dst: Path, faststart: bool = False, title: str | None = None) -> None:
    """``src``'s video stream in a new container: with ``faststart`` an MP4 with its index
    at the front (so a truncated copy opens but breaks mid-way); with ``title`` other bytes
    around the same frames (another file, by content hash, with the same faces)."""
    import av

    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=opts) as out:
        if title is not None:
            out.metadata["title"] = title
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            out.mux(packet)
