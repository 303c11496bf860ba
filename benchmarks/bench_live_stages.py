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

Frames: N cameras play the live test clip (every 6th frame of short_hamilton_clip.mp4,
640x360), each from another point of it, as bench_live_cost.py. Run:
``.venv/bin/python benchmarks/bench_live_stages.py [--cameras 8] [--steps 46]``. Prints the
table (ms of CPU per camera frame); writes nothing (the docs quote the lead's quiet run).
"""

from __future__ import annotations

import argparse
import os
import pickle
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "video" / "short_hamilton_clip.mp4"
PHOTO = ROOT.parent / "shared" / "data" / "known" / "lin-manuel-miranda.png"


class Clock:
    """CPU seconds of this thread per stage."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str):
        t0 = time.thread_time()
        try:
            yield
        finally:
            self.spent[name] += time.thread_time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--steps", type=int, default=46, help="analysed frames per camera")
    ap.add_argument("--detect-every", type=int, default=2)
    args = ap.parse_args()

    from pipelines.engine import set_torch_threads

    set_torch_threads(1)  # as one pool replica runs
    clock, steps = run(args.cameras, args.steps, args.detect_every)
    report(clock, args.cameras * steps)
    return 0


def run(cameras: int, steps: int, every: int) -> tuple[Clock, int]:
    from pipelines.config import LiveConfig, Settings
    from pipelines.engine import FaceEngine
    from pipelines.images import decode_image
    from pipelines.live.analyser import LiveAnalyser
    from pipelines.match import Gallery, Matcher
    from pipelines.video import video_jpegs

    engine = FaceEngine(Settings(), device="cpu").load(warmup=True)
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
    clock = Clock()
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


def report(clock: Clock, frames: int) -> None:
    total = sum(clock.spent.values())
    print(f"{frames} camera frames; CPU ms per camera frame (one thread):")
    for name, s in sorted(clock.spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:16} {1000 * s / frames:7.2f}  ({100 * s / total:4.1f}%)")
    print(f"  {'total':16} {1000 * total / frames:7.2f}")
    print(f"load average at end: {[round(x, 1) for x in os.getloadavg()]}")


if __name__ == "__main__":
    raise SystemExit(main())
