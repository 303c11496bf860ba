"""Where a live frame's time goes, stage by stage, in CPU time of one thread.

``bench_live.py`` measures the whole server; on a shared 2-core machine its wall-clock
numbers move with everything else that runs. This measures each stage a live frame goes
through, one after another in one process, as CPU time of the measuring thread
(``time.thread_time``), which other processes' load does not inflate. Stages:

- ``decode``: the hub's JPEG decode of a pushed frame (``decode_image``);
- ``transfer``: what sending the decoded frame to a pool replica costs in serialisation
  (Ray pickles a numpy argument with protocol 5: a header and one copy of the pixels), and
  the answer (a FaceBatch with crops) back;
- ``detect whole`` / ``detect regions``: MTCNN on whole frames, and around the faces of the
  camera's last result (``live.detect_every`` 2: half the frames each), batched over all
  cameras as the pool's live lane does;
- ``align + quality``, ``embed``, ``crops``: the rest of ``FaceEngine._faces``;
- ``track + match``: the camera's ``LiveAnalyser.update`` (matching against a one-person
  list, tracking, alert rules).

Inside MTCNN (``pipelines/mtcnn_stages.py``), for whole frames and regions apart: the image
pyramid's resizing, P-net, cutting and resizing the candidates, R-net, O-net, and the rest
(non-maximum suppression, box arithmetic), with the candidates per camera frame that reach
R-net and O-net.

Frames: N cameras play the live test clip (every 6th frame of short_hamilton_clip.mp4,
640x360), each from another point of it, as bench_live_cost.py. Run:
``.venv/bin/python benchmarks/bench_live_stages.py [--cameras 8] [--steps 46]``. Prints the
tables (ms of CPU per camera frame) and writes benchmarks/results/bench_live_stages.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "video" / "short_hamilton_clip.mp4"
PHOTO = ROOT.parent / "shared" / "data" / "known" / "lin-manuel-miranda.png"
OUT = ROOT / "benchmarks" / "results" / "bench_live_stages.json"
MTCNN_PARTS = ("pyramid", "P-net", "cut + resize", "R-net", "O-net")


class Clock:
    """CPU seconds of this thread per stage."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.inside: dict[str, float] = defaultdict(float)  # "detect whole: O-net", ...
        self.candidates: dict[str, int] = defaultdict(int)  # "detect whole: O-net", ...
        self.current = ""
        self.within = False

    @contextmanager
    def stage(self, name: str):
        self.current = name
        t0 = time.thread_time()
        try:
            yield
        finally:
            self.spent[name] += time.thread_time() - t0
            self.current = ""

    def timed(self, part: str, fn, count=None):
        """``fn``, with its CPU time (and ``count(args)`` candidates) booked under the
        current stage's ``part``."""

        def wrapper(*args, **kwargs):
            if self.within:  # called by another booked part (a large candidate's resize)
                return fn(*args, **kwargs)
            self.within = True
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.within = False
                self.inside[f"{self.current}: {part}"] += time.thread_time() - t0
                if count is not None:
                    self.candidates[f"{self.current}: {part}"] += count(args)

        return wrapper


def instrument(engine, clock: Clock) -> None:
    """Book MTCNN's parts (module docstring) under the detect stage that runs them."""
    from pipelines import mtcnn_stages

    mtcnn = engine.detector.load()._mtcnn
    mtcnn_stages.imresample = clock.timed("pyramid", mtcnn_stages.imresample)
    mtcnn_stages.crop_resize = clock.timed("cut + resize", mtcnn_stages.crop_resize)
    mtcnn.pnet.forward = clock.timed("P-net", mtcnn.pnet.forward)
    mtcnn.rnet.forward = clock.timed("R-net", mtcnn.rnet.forward, lambda a: len(a[0]))
    mtcnn.onet.forward = clock.timed("O-net", mtcnn.onet.forward, lambda a: len(a[0]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--steps", type=int, default=46, help="analysed frames per camera")
    ap.add_argument("--detect-every", type=int, default=2)
    args = ap.parse_args()

    from pipelines.engine import set_torch_threads

    set_torch_threads(1)  # as one pool replica runs
    clock, steps = run(args.cameras, args.steps, args.detect_every)
    result = report(clock, args.cameras * steps)
    result["args"] = vars(args)
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT}")
    return 0


def run(cameras: int, steps: int, every: int) -> tuple[Clock, int]:
    from pipelines.config import LiveConfig, Settings
    from pipelines.engine import FaceEngine
    from pipelines.images import decode_image
    from pipelines.live.analyser import LiveAnalyser
    from pipelines.match import Gallery, Matcher
    from pipelines.video import video_jpegs

    engine = FaceEngine(Settings(), device="cpu").load(warmup=True)
    clock = Clock()
    instrument(engine, clock)
    jpegs = video_jpegs(CLIP, every=6)
    probe = engine.probe_face(PHOTO)
    gallery = Gallery(  # the one-person list of bench_live
        np.asarray([probe.embedding], np.float32),
        ["e1"],
        ["p1"],
        ["Lin-Manuel Miranda"],
        ["watch"],
        [""],
        engine.info,
        np.asarray([0.95], np.float32),
    )
    matcher = Matcher(gallery)
    analysers = [LiveAnalyser(f"cam{c}", LiveConfig(), epoch="0") for c in range(cameras)]
    for a in analysers:
        a.set_matcher(matcher)
    offset = max(1, len(jpegs) // cameras)
    last: list[np.ndarray | None] = [None] * cameras
    for step in range(steps):
        frames = []
        for c in range(cameras):
            with clock.stage("decode"):
                frames.append(decode_image(jpegs[(step + c * offset) % len(jpegs)]))
        with clock.stage("transfer"):
            sent = [pickle.loads(pickle.dumps(f, protocol=5)) for f in frames]
        regions = [None if step % every == 0 else last[c] for c in range(cameras)]
        batch = faces(engine, clock, sent, regions)
        with clock.stage("transfer"):
            pickle.loads(pickle.dumps(batch, protocol=5))
        from pipelines.schemas import split_batch

        for c, part in enumerate(split_batch(batch)):
            with clock.stage("track + match"):
                analysers[c].update(step / 5.0, step, time.time(), part)
            last[c] = part.detections.boxes.copy()
    return clock, steps


def faces(engine, clock: Clock, frames: list[np.ndarray], regions: list):
    """``FaceEngine.process_regions`` with crops, stage by stage."""
    from pipelines.align import align_faces
    from pipelines.images import crop_thumbnail
    from pipelines.schemas import FaceBatch

    whole = [r is None for r in regions]
    with clock.stage("detect whole" if all(whole) else "detect regions"):
        dets = engine.detect_regions(frames, regions)
    emb = engine.embedder
    with clock.stage("align + quality"):
        chips, _ = align_faces(frames, dets, emb.template, emb.chip_size, emb.template_weights)
        quality = engine.gate.assess(dets, chips)
    vectors = np.zeros((len(dets), engine.info.dim), np.float32)
    with clock.stage("embed"):
        if quality.passed.any():
            vectors[quality.passed] = emb.embed(chips[quality.passed])
    with clock.stage("crops"):
        pairs = zip(dets.frame_index, dets.boxes, strict=True)
        crops = [crop_thumbnail(frames[int(f)], b) for f, b in pairs]
    return FaceBatch(dets, quality, vectors, engine.info, len(frames), crops)


def report(clock: Clock, frames: int) -> dict:
    total = sum(clock.spent.values())
    ms = {name: round(1000 * s / frames, 2) for name, s in clock.spent.items()}
    print(f"{frames} camera frames; CPU ms per camera frame (one thread):")
    for name, s in sorted(clock.spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:16} {1000 * s / frames:7.2f}  ({100 * s / total:4.1f}%)")
    print(f"  {'total':16} {1000 * total / frames:7.2f}")
    mtcnn = {}
    for stage in ("detect whole", "detect regions"):
        if stage not in clock.spent:
            continue
        parts = {p: 1000 * clock.inside.get(f"{stage}: {p}", 0.0) / frames for p in MTCNN_PARTS}
        parts["the rest"] = 1000 * clock.spent[stage] / frames - sum(parts.values())
        mtcnn[stage] = {
            "ms_per_camera_frame": {p: round(v, 2) for p, v in parts.items()},
            "candidates_per_camera_frame": {
                net: round(clock.candidates.get(f"{stage}: {net}", 0) / frames, 1)
                for net in ("R-net", "O-net")
            },
        }
        print(f"  inside {stage}: " + ", ".join(f"{p} {v:.2f}" for p, v in parts.items()))
        print(f"    candidates per camera frame: {mtcnn[stage]['candidates_per_camera_frame']}")
    load = [round(x, 1) for x in os.getloadavg()]
    print(f"load average at end: {load}")
    return {
        "benchmark": "bench_live_stages",
        "camera_frames": frames,
        "ms_per_camera_frame": ms,
        "total_ms_per_camera_frame": round(1000 * total / frames, 2),
        "mtcnn": mtcnn,
        "load_average_at_end": load,
    }


if __name__ == "__main__":
    raise SystemExit(main())
