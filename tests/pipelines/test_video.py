"""Reading archive video with decord: sampling, planning, and every kind of broken file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from videofiles import remux

from pipelines.video import (
    VideoError,
    find_videos,
    plan_segments,
    probe,
    read_frames,
    sample_indices,
    video_jpegs,
)

CLIP = "video/short_hamilton_clip.mp4"


@pytest.mark.parametrize(
    "n,fps,sample,expected",
    [
        (10, 10.0, 5.0, [0, 2, 4, 6, 8]),
        (275, 29.97, 2.0, None),  # checked by properties below
        (5, 2.0, 10.0, [0, 1, 2, 3, 4]),  # slower video than asked: every frame
        (1, 25.0, 2.0, [0]),
    ],
)
def test_sample_indices(n, fps, sample, expected):
    idx = sample_indices(n, fps, sample)
    if expected is not None:
        assert idx == expected
    assert idx[0] == 0 and all(0 <= i < n for i in idx)
    assert idx == sorted(set(idx))
    if sample < fps:
        assert len(idx) == pytest.approx(n / fps * sample, abs=1.5)


def test_probe_and_plan_real_clip(data):
    info = probe(str(data / CLIP))
    assert (info.width, info.height, info.n_frames) == (640, 360, 275)
    assert info.fps == pytest.approx(29.97, abs=0.01)
    segs = plan_segments(info, "abc", sample_fps=2.0, segment_s=4.0)
    flat = [i for s in segs for i in s.frame_indices]
    assert flat == sample_indices(275, info.fps, 2.0)
    assert all(len(s.frame_indices) <= 8 for s in segs) and len(segs) == 3


def test_read_frames_gives_the_sampled_frames(data):
    info = probe(str(data / CLIP))
    seg = plan_segments(info, "abc", 2.0, 60.0)[0]
    got = [(idx, frames) for idx, frames in read_frames(seg, chunk=4)]
    indices = [i for idx, _ in got for i in idx]
    assert indices == list(seg.frame_indices)
    assert all(f.shape[1:] == (360, 640, 3) and f.dtype == np.uint8 for _, f in got)


@pytest.mark.parametrize("kind", ["zero", "text", "truncated_head", "missing"])
def test_unreadable_files_raise_a_clear_error(tmp_path, data, kind):
    path = tmp_path / f"{kind}.mp4"
    raw = (data / CLIP).read_bytes()
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n")
    elif kind == "truncated_head":  # moov atom at the end: cut before it
        path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(VideoError) as err:
        probe(str(path))
    assert err.value.reason in {"empty file", "not a readable video", "not found"}
    assert str(path) in str(err.value)


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_a_file_truncated_mid_stream_is_read_up_to_the_break(tmp_path, data, container):
    full = tmp_path / f"full.{container}"
    remux(data / CLIP, full, faststart=container == "mp4")
    cut = tmp_path / f"cut.{container}"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.5)])
    info = probe(str(cut))
    assert 100 < info.n_frames < 200  # about half of the 275 frames
    seg = plan_segments(info, "x", 5.0, 600.0)[0]
    got = [i for idx, _frames in read_frames(seg, chunk=4) for i in idx]
    assert got == list(seg.frame_indices)
    if container == "mp4":  # decord cannot index a cut MP4; PyAV reads it
        assert info.backend == "pyav" and info.frames_declared == 275


def test_find_videos_recurses_folders_and_keeps_named_files(tmp_path, data):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(data / CLIP, tmp_path / "a" / "b" / "x.MP4")
    (tmp_path / "a" / "notes.txt").write_text("no")
    odd = tmp_path / "named.bin"
    odd.write_bytes(b"\0")
    found = find_videos([tmp_path / "a", odd, tmp_path / "a"])
    assert found == [tmp_path / "a" / "b" / "x.MP4", odd]


def test_symlink_loops_are_files_that_fail_not_a_failed_walk(tmp_path, data):
    """A link loop in a searched folder (a file linking to itself, two files linking to
    each other, a folder linking to its parent) used to abort the whole search with a
    RuntimeError from Path.resolve; now each looping file is found, and opening it names
    the loop, while the good file is found once."""
    a = tmp_path / "a"
    (a / "b").mkdir(parents=True)
    shutil.copy(data / CLIP, a / "good.mp4")
    (a / "self.mp4").symlink_to(a / "self.mp4")
    (a / "ping.mp4").symlink_to(a / "pong.mp4")
    (a / "pong.mp4").symlink_to(a / "ping.mp4")
    (a / "b" / "up").symlink_to(a)  # a folder loop: not followed
    (a / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    found = find_videos([a])
    assert sorted(p.name for p in found) == [
        "gone.mp4", "good.mp4", "ping.mp4", "pong.mp4", "self.mp4",
    ]  # fmt: skip
    for name, reason in [
        ("self.mp4", "a symbolic link loop"),
        ("ping.mp4", "a symbolic link loop"),
        ("gone.mp4", "a broken symbolic link"),
    ]:
        with pytest.raises(VideoError) as err:
            probe(str(a / name))
        assert err.value.reason == reason
    assert probe(str(a / "good.mp4")).n_frames == 275


def test_video_jpegs_are_every_nth_frame_as_jpeg(data):
    import decord

    clip = data / "video" / "short_hamilton_clip.mp4"
    n = len(decord.VideoReader(str(clip)))
    jpegs = video_jpegs(clip, every=10)
    assert len(jpegs) == -(-n // 10)
    assert all(j[:3] == b"\xff\xd8\xff" for j in jpegs)  # JPEG start-of-image marker
    with pytest.raises(ValueError, match="every must be >= 1"):
        video_jpegs(clip, every=0)
