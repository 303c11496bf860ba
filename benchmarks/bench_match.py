"""1:N matching in memory (``pipelines.match.Matcher``) against lists of 1k, 10k and 100k people.

The lists are SYNTHETIC: random unit vectors in the dlib-resnet space (128 dimensions),
one or two photos per person; the faces matched are random unit vectors too. Matching
cost does not depend on what the vectors hold (a matrix product, a per-person maximum and
a top-k), so synthetic vectors measure the speed honestly; they say nothing of accuracy.

Per list size and photos per person: milliseconds per face when faces come one at a time
and per face in batches of 64 (median and fastest of --repeats: the CPU is shared), the
time to build the matcher, and the memory the matcher holds (its arrays, and the process
RSS it added). One thread of
BLAS (``OMP_NUM_THREADS=1``, as in a pool replica). Results:
``benchmarks/results/bench_match.json``.

    .venv/bin/python benchmarks/bench_match.py
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: one BLAS thread

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.match import Gallery, Matcher  # noqa: E402
from pipelines.schemas import EmbedderInfo  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
INFO = EmbedderInfo("dlib-resnet", "synthetic", 128)


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, INFO.dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def gallery(rng: np.random.Generator, people: int, photos: int) -> Gallery:
    m = people * photos
    pids = [f"p{i}" for i in range(people) for _ in range(photos)]
    return Gallery(
        embeddings=unit(rng, m),
        entry_ids=[f"e{i}" for i in range(m)],
        person_ids=pids,
        person_names=pids,
        list_names=["bench"] * m,
        photos=[""] * m,
        embedder=INFO,
        thresholds=np.full(m, 0.95, np.float32),
        review_thresholds=np.full(m, 0.935, np.float32),
    )


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, fastest) seconds of ``repeats`` calls: on a shared CPU the fastest is the
    cost when this process had a core, the median what it got."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return float(np.median(out)), float(np.min(out))


def measure(people: int, photos: int, repeats: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    g = gallery(rng, people, photos)
    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    matcher = Matcher(g)
    build_s = time.perf_counter() - t0
    arrays = [g.embeddings, *(a for a in vars(matcher).values() if isinstance(a, np.ndarray))]
    held = sum(a.nbytes for a in {id(a): a for a in arrays}.values())  # shared ones once
    faces = unit(rng, 64)
    matcher.match(faces, INFO, 5)  # warm
    one = timed(lambda: matcher.match(faces[:1], INFO, 5), repeats)
    batch = timed(lambda: matcher.match(faces, INFO, 5), max(3, repeats // 4))
    return {
        "people": people,
        "photos_per_person": photos,
        "entries": people * photos,
        "ms_per_face_single": round(one[0] * 1000, 3),
        "ms_per_face_single_fastest": round(one[1] * 1000, 3),
        "ms_per_face_in_batch_of_64": round(batch[0] * 1000 / 64, 3),
        "ms_per_face_in_batch_of_64_fastest": round(batch[1] * 1000 / 64, 3),
        "ms_per_batch_of_64": round(batch[0] * 1000, 2),
        "build_s": round(build_s, 3),
        "arrays_mb": round(held / 1024**2, 1),
        "rss_added_mb": round(rss_mb() - before, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--photos", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_match.json")
    args = ap.parse_args()
    rows = []
    for photos in args.photos:
        for n in args.sizes:
            rows.append(measure(n, photos, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    res = {
        "synthetic": "yes: random unit vectors (128-d); speed and memory only",
        "rows": rows,
        "target_ms_per_face_at_100k": 5.0,
        "machine": {
            "cpus": os.cpu_count(),
            "blas_threads": os.environ.get("OMP_NUM_THREADS"),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "load": [round(x, 2) for x in os.getloadavg()],
        },
    }
    args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
