"""The archive speed options of issue 19, each measured before it is chosen.

One run, one process, each option beside its baseline, interleaved (A, B, A, B ...) so a
shared machine's load falls on both alike; wall and CPU seconds and the load average are
recorded with every pair:

- ``int8``: torch's dynamic int8 quantisation of the embedder (``quantize_dynamic``), on
  real face chips from the ``bench_recall`` video cache: time per batch of 64, and how far
  the embeddings move (cosine to the float embedding; how many scores against the
  enrolment photos cross the alert threshold);
- ``compile``: ``torch.compile`` of the embedder: compile time, then time per batch;
- ``lowres``: whole-frame detection of a ground-truth frame at ``detector.max_side`` 1280
  (full size), 960 and 640: time, and how many of the full-size faces are still found;
- ``static``: how many sampled frames (2 fps) differ from the sampled frame before by less
  than a mean absolute pixel difference of 2 (what static-frame skipping could skip).

Run: ``.venv/bin/python benchmarks/archive_options.py --out /tmp/archive_options.json``
(about 3 minutes on 2 quiet cores; needs ``benchmarks/results/recall-cache`` from
``bench_recall.py`` and the ground-truth video from ``bench_archive.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "benchmarks" / "results" / "recall-cache"


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` wall and CPU seconds of ``fn``."""
    walls, cpus = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return {"wall_s": round(min(walls), 4), "cpu_s": round(min(cpus), 4)}


def interleave(a: Callable[[], Any], b: Callable[[], Any], rounds: int, repeat: int) -> dict:
    """A and B alternately, ``rounds`` times: each round's times and the load average."""
    out: list[dict[str, Any]] = []
    ratio = []
    for _ in range(rounds):
        load, ta, tb = os.getloadavg(), timed(a, repeat), timed(b, repeat)
        out.append({"load_avg": load, "a": ta, "b": tb})
        ratio.append(ta["cpu_s"] / max(tb["cpu_s"], 1e-9))
    return {"rounds": out, "cpu_a_over_b_median": round(float(np.median(ratio)), 3)}


def chips(n: int) -> np.ndarray:
    f = np.load(CACHE / "faces_seed1.npz")
    passed = np.flatnonzero(f["passed"])
    pick = np.random.default_rng(0).choice(passed, min(n, len(passed)), replace=False)
    return np.asarray(f["chip"][np.sort(pick)])


def forward(net, x) -> np.ndarray:
    """The network's L2-normalised embeddings of a uint8 chip batch (N, S, S, 3)."""
    import torch

    with torch.inference_mode():
        return torch.nn.functional.normalize(net(x).float(), dim=1).numpy()


def option_int8(engine, sample: np.ndarray, rounds: int) -> dict:
    import torch

    model = engine.embedder.model()
    x = torch.from_numpy(np.ascontiguousarray(sample))
    quant = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    cos = np.sum(forward(model, x) * forward(quant, x), axis=1)
    batch = x[:64]
    cmp = interleave(lambda: forward(quant, batch), lambda: forward(model, batch), rounds, 3)
    return {
        "layers_quantised": sum(isinstance(m, torch.nn.Linear) for m in model.modules()),
        "conv_layers_left_float": sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()),
        "int8_vs_float": cmp,
        "cosine_to_float": {
            "min": round(float(cos.min()), 5),
            "median": round(float(np.median(cos)), 5),
        },
    }


def option_compile(engine, sample: np.ndarray, rounds: int) -> dict:
    import torch

    model = engine.embedder.model()
    batch = torch.from_numpy(np.ascontiguousarray(sample[:64]))
    t0 = time.perf_counter()
    try:
        compiled = torch.compile(model, dynamic=False)
        forward(compiled, batch)  # compiles
    except Exception as exc:  # noqa: BLE001  (a compiler that is missing or fails)
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    compile_s = time.perf_counter() - t0
    cos = np.sum(forward(compiled, batch) * forward(model, batch), axis=1)
    cmp = interleave(lambda: forward(compiled, batch), lambda: forward(model, batch), rounds, 3)
    return {
        "compile_s": round(compile_s, 1),
        "compiled_vs_float": cmp,
        "cosine_to_float_min": round(float(cos.min()), 5),
    }


def option_lowres(engine, frames: list[np.ndarray], rounds: int) -> dict:
    det = engine.detector
    full = det.config.max_side
    out: dict[str, Any] = {}
    base = det.detect(frames)
    for side in (960, 640):
        det.config = det.config.model_copy(update={"max_side": side})
        found = det.detect(frames)
        det.config = det.config.model_copy(update={"max_side": full})

        def low(side: int = side) -> None:
            det.config = det.config.model_copy(update={"max_side": side})
            try:
                det.detect(frames)
            finally:
                det.config = det.config.model_copy(update={"max_side": full})

        out[str(side)] = {
            "faces_full": len(base),
            "faces_low": len(found),
            "low_vs_full": interleave(low, lambda: det.detect(frames), rounds, 1),
        }
    return out


def option_static(video: Path, fps: float) -> dict:
    import decord

    from pipelines.video import sample_indices

    reader = decord.VideoReader(str(video))
    idx = sample_indices(len(reader), float(reader.get_avg_fps()), fps)
    prev, diffs = None, []
    for start in range(0, len(idx), 16):
        for f in reader.get_batch(idx[start : start + 16]).asnumpy():
            g = f.astype(np.int16)
            if prev is not None:
                diffs.append(float(np.abs(g - prev).mean()))
            prev = g
    d = np.asarray(diffs)
    quantiles = [round(float(q), 2) for q in np.quantile(d, (0.1, 0.5, 0.9))]
    return {"frames": len(idx), "static_below_2": int((d < 2.0).sum()), "diff_quantiles": quantiles}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--video", type=Path, action="append", help="videos for lowres and static")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chips", type=int, default=256)
    ap.add_argument("--skip", nargs="*", default=[], help="options to leave out")
    args = ap.parse_args()
    from pipelines.config import Settings
    from pipelines.engine import FaceEngine, set_torch_threads

    set_torch_threads(2)
    engine = FaceEngine(Settings(), device="cpu").load()
    res: dict[str, Any] = {"load_avg_before": os.getloadavg(), "cpus": os.cpu_count()}
    sample = chips(args.chips)
    if "int8" not in args.skip:
        res["int8"] = option_int8(engine, sample, args.rounds)
        print(json.dumps(res["int8"]), flush=True)
    if "compile" not in args.skip:
        res["compile"] = option_compile(engine, sample, args.rounds)
        print(json.dumps(res["compile"]), flush=True)
    for v in args.video or []:
        import decord

        reader = decord.VideoReader(str(v))
        frames = list(
            reader.get_batch([int(len(reader) * q) for q in (0.2, 0.4, 0.6, 0.8)]).asnumpy()
        )
        if "lowres" not in args.skip:
            res[f"lowres {v.name}"] = option_lowres(engine, frames, args.rounds)
            print(json.dumps(res[f"lowres {v.name}"]), flush=True)
        if "static" not in args.skip:
            res[f"static {v.name}"] = option_static(v, 2.0)
            print(json.dumps(res[f"static {v.name}"]), flush=True)
    res["load_avg_after"] = os.getloadavg()
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
