"""A clip's offset is in a search's times (frame index / fps, from the file's first frame),
whatever the file's first timestamp: examples/short_hamilton_clip.mp4 starts at 0.852 s,
and an offset in the file's own timestamps put every face box 0.85 s ahead of its face."""

from __future__ import annotations

from pathlib import Path

import av
import decord
import numpy as np
import pytest

from pipelines.clips import cut_clip

CLIP = Path(__file__).resolve().parents[2] / "examples" / "short_hamilton_clip.mp4"


@pytest.mark.timeout(60)
def test_the_clip_starts_at_the_frame_its_offset_names_in_the_search_times(tmp_path):
    clip = cut_clip(CLIP, 3.0, 7.0, tmp_path / "clip.mp4")
    assert 0.0 <= clip.offset_s <= 3.0
    with av.open(str(clip.path)) as f:
        first = next(f.decode(video=0)).to_ndarray(format="rgb24").astype(np.float32)
    reader = decord.VideoReader(str(CLIP))
    at = round(clip.offset_s * reader.get_avg_fps())  # the search's frame at that time

    def diff(index: int) -> float:
        return float(np.abs(reader[index].asnumpy().astype(np.float32) - first).mean())

    nearby = {i: diff(i) for i in range(max(0, at - 30), min(len(reader), at + 30))}
    assert min(nearby, key=nearby.__getitem__) == at, sorted(nearby.items(), key=lambda x: x[1])[:3]
