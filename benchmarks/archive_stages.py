"""Where the archive search's time goes, stage by stage, beside the naive loop's.

``facewatch search`` runs its stages in Ray workers and a Serve replica, where no clock
sees them one by one. This module runs the same per-frame work in one process, on the
same engine and settings, with a clock (wall and CPU seconds) around every stage:

- search: decode (decord, the sampled frames, 4 at a time as the decoder reads them),
  whole-frame detection, region detection (``search.detect_every``), alignment and quality
  and crops (the rest of ``FaceEngine.process``), embedding, matching (``Matcher``), and
  tracking with the track decisions (``Tracker``, ``decide_tracks``, ``group_sightings``);
- naive: decode (one frame at a time), MTCNN at its defaults, alignment, embedding and
  matching (``bench_archive.Naive``).

What the real search spends beyond the sum of its stages (starting Ray, Serve and the
pool, moving frames between processes, the store's writes, the report) is the end-to-end
wall time minus that sum; bench_archive reports it as the remainder. The stage clocks wrap
the engine's own objects (``Timed``), so the numbers are of the shipped code, not a copy.
CPU seconds count every thread of this process (torch's too); on a loaded machine they
are steadier than wall seconds.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

FRAME_CHUNK = 4  # frames per pool call in the search (search_stages.FaceStage's chunk)
ENGINE = "align_quality_crops"  # FaceEngine.process less its detection and embedding


class Clock:
    """Wall and CPU seconds per stage name."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def run(self, stage: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kw)
        finally:
            self.wall[stage] += time.perf_counter() - w0
            self.cpu[stage] += time.process_time() - c0

    def nest(self, outer: str, inner: tuple[str, ...]) -> None:
        """``outer``'s clock ran around ``inner``'s: keep only its own time."""
        for clock in (self.wall, self.cpu):
            clock[outer] -= sum(clock[k] for k in inner)

    def report(self, total_wall: float, total_cpu: float, rest: str) -> dict[str, Any]:
        """Per stage {wall_s, cpu_s}; ``rest`` gets what no named stage took."""
        out = {
            k: {"wall_s": round(self.wall[k], 3), "cpu_s": round(self.cpu[k], 3)} for k in self.wall
        }
        out[rest] = {
            "wall_s": round(max(0.0, total_wall - sum(self.wall.values())), 3),
            "cpu_s": round(max(0.0, total_cpu - sum(self.cpu.values())), 3),
        }
        return out


class Timed:
    """A proxy around ``target`` whose methods named in ``stages`` run under ``clock``
    (``{method: stage}``); everything else passes through."""

    def __init__(self, target: Any, clock: Clock, stages: dict[str, str]):
        self._target, self._clock, self._stages = target, clock, stages

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._stages or not callable(attr):
            return attr
        stage = self._stages[name]
        return lambda *a, **kw: self._clock.run(stage, attr, *a, **kw)


def search_stages(video: Path, fps: float, gallery, settings=None) -> dict[str, Any]:
    """The search's per-frame work on ``video`` in this process, stage by stage."""
    import decord

    from pipelines.config import Settings
    from pipelines.engine import FaceEngine
    from pipelines.match import Matcher
    from pipelines.video import sample_indices
    from serve.pool import whole_frames

    settings = settings or Settings()
    every, clock = settings.search.detect_every, Clock()
    engine = FaceEngine(settings, device="cpu").load()
    detect = {"detect": "detect_whole", "detect_regions": "detect_regions"}
    engine.detector = cast(Any, Timed(engine.detector, clock, detect))
    engine.embedder = cast(Any, Timed(engine.embedder, clock, {"embed": "embed"}))
    matcher = Matcher(gallery)
    w0, c0 = time.perf_counter(), time.process_time()
    reader = decord.VideoReader(str(video))
    vfps = float(reader.get_avg_fps())
    idx = sample_indices(len(reader), vfps, fps)
    rows: dict[str, list] = defaultdict(list)
    for start in range(0, len(idx), FRAME_CHUNK):
        part = idx[start : start + FRAME_CHUNK]
        frames = list(clock.run("decode", lambda p=part: reader.get_batch(p).asnumpy()))
        # as FaceStage calls the pool: each chunk starts whole, then every detect_every-th
        whole = whole_frames([False] + [True] * (len(part) - 1), every, len(part))
        batch = clock.run(ENGINE, engine.process, frames, True, whole)
        found = clock.run("match", matcher.match, batch.embeddings, batch.embedder, 5)
        _collect(rows, part, vfps, batch, found)
    n_tracks = clock.run("track_decide", _decide, rows, matcher, settings)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    clock.nest(ENGINE, ("detect_whole", "detect_regions", "embed"))
    return {
        "frames": len(idx),
        "faces": len(rows["t"]),
        "sightings": n_tracks,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "stages": clock.report(wall, cpu, "other"),
    }


def _collect(rows: dict[str, list], part: list[int], vfps: float, batch, found) -> None:
    found.margin[~batch.passed] = -np.inf
    for f in range(len(batch.detections)):
        rows["t"].append(part[int(batch.detections.frame_index[f])] / vfps)
        rows["frame"].append(part[int(batch.detections.frame_index[f])])
        rows["box"].append(batch.detections.boxes[f])
        rows["passed"].append(bool(batch.passed[f]))
        rows["quality"].append(float(batch.quality.quality_score[f]))
        rows["emb"].append(batch.embeddings[f])
        for key in ("person", "score", "margin"):
            rows[key].append(getattr(found, key)[f])


def _decide(rows: dict[str, list], matcher, settings) -> int:
    """Tracks, verdicts and sightings as ``ArchiveSearch`` makes them; the sighting count."""
    from pipelines.sightings import FaceTable, decide_tracks, group_sightings
    from pipelines.track import Tracker, TrackerConfig

    if not rows["t"]:
        return 0
    a = {k: np.asarray(v) for k, v in rows.items()}
    n = len(a["t"])
    table = FaceTable(a["t"], a["frame"], np.zeros(n, int), a["box"], a["passed"],
                      a["quality"], a["person"], a["score"], a["margin"])  # fmt: skip
    tracker = Tracker(TrackerConfig.for_embedder(matcher.gallery.embedder.name))
    tids = np.zeros(n, np.int64)
    for fr in np.unique(a["frame"]):
        r = np.flatnonzero(a["frame"] == fr)
        tids[r] = tracker.update(float(a["t"][r[0]]), a["box"][r], a["emb"][r], a["passed"][r])
    verdicts = decide_tracks(table, tids, settings.search.top_n, matcher.review_gap)
    return len(group_sightings(table, verdicts, settings.search.link_gap_s))


def naive_stages(naive, video: Path, fps: float) -> dict[str, Any]:
    """``bench_archive.Naive`` on ``video`` with a clock around each of its stages."""
    import decord

    from pipelines.video import sample_indices

    clock = Clock()
    mtcnn, embedder = naive.mtcnn, naive.embedder
    naive.mtcnn = Timed(mtcnn, clock, {"detect": "detect"})
    naive.embedder = Timed(embedder, clock, {"embed": "embed"})
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        reader = decord.VideoReader(str(video))
        vfps = float(reader.get_avg_fps())
        idx = sample_indices(len(reader), vfps, fps)
        for i in idx:
            frame = clock.run("decode", lambda i=i: reader[i].asnumpy())
            naive.frame(frame)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    finally:
        naive.mtcnn, naive.embedder = mtcnn, embedder
    return {
        "frames": len(idx),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "stages": clock.report(wall, cpu, "align_match_other"),
    }
