"""The pool's model time per live frame, with and without the live levers, in one process.

``bench_live.py`` measures the whole server, whose numbers on a shared 2-core machine move
with everything else that runs. This measures only what the levers change, the engine's
time per camera frame, in three modes run on the same frames one step after another, so
that load changes hit all three alike:

- ``whole, one call per frame``: every frame searched whole, each camera's frame its own
  model call (the pool before batching across cameras, or with one camera per batch);
- ``whole, one call for all cameras``: the same frames, all cameras' frames of a step in
  one call (``FaceEngine.process_regions`` with no regions);
- ``detect_every 2, one call``: as the live path runs now (``live.detect_every: 2``): each
  camera's frame searched whole every 2nd step and otherwise only around the faces of its
  own last result, all cameras in one call.

N cameras play the live test clip at 5 fps (every 6th frame of short_hamilton_clip.mp4),
each starting at another point of it. Faces found per mode are counted, to show what the
cheaper modes keep. Run: ``.venv/bin/python benchmarks/bench_live_cost.py [--cameras 8]``;
writes benchmarks/results/bench_live_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "video" / "short_hamilton_clip.mp4"
OUT = ROOT / "benchmarks" / "results" / "bench_live_cost.json"
MODES = ("whole, one call per frame", "whole, one call for all cameras", "detect_every 2, one call")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--steps", type=int, default=46, help="analysed frames per camera")
    ap.add_argument("--note", default="", help="what else ran on the machine (kept in the JSON)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from pipelines.config import Settings
    from pipelines.engine import FaceEngine, set_torch_threads
    from pipelines.images import decode_image
    from pipelines.video import video_jpegs

    set_torch_threads(1)  # as one pool replica runs
    engine = FaceEngine(Settings(), device="cpu").load(warmup=True)
    clip = [decode_image(j) for j in video_jpegs(CLIP, every=6)]
    offset = max(1, len(clip) // args.cameras)
    spent = dict.fromkeys(MODES, 0.0)
    faces = dict.fromkeys(MODES, 0)
    usable = dict.fromkeys(MODES, 0)
    last: list[np.ndarray | None] = [None] * args.cameras  # step 0 is searched whole
    for step in range(args.steps):
        frames = [clip[(step + c * offset) % len(clip)] for c in range(args.cameras)]
        regions = [None if step % 2 == 0 else last[c] for c in range(args.cameras)]
        for mode in MODES:
            t0 = time.perf_counter()
            out = run(engine, mode, frames, regions)
            spent[mode] += time.perf_counter() - t0
            faces[mode] += sum(len(b) for b in out)
            usable[mode] += sum(int(b.passed.sum()) for b in out)
            if mode == MODES[2]:
                dets = out[0].detections
                last = [dets.boxes[dets.frame_index == c] for c in range(args.cameras)]
    report(args, spent, faces, usable)
    return 0


def run(engine, mode: str, frames: list[np.ndarray], regions: list) -> list:
    """One step of ``mode``: the model calls it makes for these cameras' frames."""
    if mode == MODES[0]:
        return [engine.process([f], with_crops=True) for f in frames]
    if mode == MODES[1]:
        return [engine.process_regions(frames, [None] * len(frames), True)]
    return [engine.process_regions(frames, regions, True)]


def report(args, spent: dict, faces: dict, usable: dict) -> None:
    n = args.cameras * args.steps
    modes = {
        m: {
            "model_ms_per_camera_frame": round(1000 * spent[m] / n, 1),
            "capacity_fps_on_2_replicas": round(2 * n / spent[m], 1),
            "faces_found": faces[m],
            "usable_faces": usable[m],
        }
        for m in MODES
    }
    doc = {
        "benchmark": "bench_live_cost",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "note": args.note,
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "camera_frames": n,
        "modes": modes,
        "speedup_vs_whole_per_frame": {m: round(spent[MODES[0]] / spent[m], 2) for m in MODES},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    for m, r in modes.items():
        print(f"{m:34} {r}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    raise SystemExit(main())
