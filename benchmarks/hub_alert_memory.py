"""The live hub's memory per stored alert, on the embedded store (milvus-lite runs inside the
hub): the hub's own recorder (serve.alerts.AlertRecorder: the match row in milvus-lite, the
crop in the home's media, the review-book row), one alert at a time as the hub writes them.

Each setting runs in a fresh process of its own, with the hub's allocator settings
(serve/memory_env.py's ``MEMORY_ENV``), on a new home:
- ``flush every N``: the shipped recorder (``serve.alerts.FLUSH_EVERY``), with Arrow on
  malloc as in the hub (``hub_process_env``: ``ARROW_DEFAULT_MEMORY_POOL=system``);
- ``flush every N, Arrow on mimalloc``: the same with the Arrow pool of pyarrow's wheels,
  as the hub ran before;
- ``never flushed``: milvus-lite's own rule (a flush at 128 MB of buffered Arrow data).
Per setting: RSS and its anonymous part, glibc's memory in use and Arrow's, every 500
alerts; the slope in KiB per alert over the second half of the run (after the first flush
and its one-off cost), the largest RSS, and the longest flush.

The embeddings are random unit vectors and the crops random pixels: the store and the media
do not look at them, and their sizes are the hub's (128 floats, a JPEG of a 160x160 crop).

Run: ``.venv/bin/python benchmarks/hub_alert_memory.py [--alerts 16000]`` (about 3 minutes
on 2 cores). Prints a table, writes benchmarks/results/hub_alert_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "hub_alert_memory.json"
NEVER = 10**9  # a flush_every no run reaches
# person, list, snapshot and scores: the same in every alert
WHO = ("p_x", "X", "wl", "", "s_x", 0.97, 0.02, 0.95)


def _sample(n: int) -> dict:
    from serve.memprobe import arrow_stats, mallinfo, rss_parts

    parts = rss_parts()
    return {
        "alerts": n,
        "rss_kb": parts["rss_kb"],
        "anon_kb": parts["anon_kb"],
        "malloc_in_use_kb": mallinfo()["in_use_kb"],
        "arrow_kb": arrow_stats().get("arrow_allocated_kb", 0),
    }


def child(alerts: int, flush_every: int) -> dict:
    """One setting, in this process: ``alerts`` alerts through the hub's recorder."""
    from pipelines.config import Settings
    from pipelines.home import Home
    from pipelines.live.alert_record import alert_record
    from pipelines.live.analyser import AlertDraft, Face
    from pipelines.live.cameras import CameraSpec
    from pipelines.live.review_book import ReviewBook
    from pipelines.schemas import EmbedderInfo
    from serve.alerts import AlertRecorder

    home = Home.open(
        Settings(home=Path(tempfile.mkdtemp(prefix="hub-alerts-")) / "home"),
        EmbedderInfo("dlib-resnet", "bench", 128),
    )
    recorder = AlertRecorder(home.vectors(), home.media, ReviewBook(home.catalog), flush_every)
    camera, rng = CameraSpec(id="cam1", url="push"), np.random.default_rng(0)
    crop = rng.integers(0, 255, size=(160, 160, 3), dtype=np.uint8)
    samples, flush_ms, flushes = [_sample(0)], [], 0
    for n in range(1, alerts + 1):
        e = rng.normal(size=128).astype(np.float32)
        face = Face(
            0.0, n, time.time(), 0, np.array([1.0, 2, 50, 60]), 1.0, e / np.linalg.norm(e), crop
        )
        draft = AlertDraft(f"a_{n}", camera.id, n, *WHO, face, 0.97, n, 0.0, 3)
        t0 = time.perf_counter()
        recorder.record(draft, alert_record(draft, camera))
        if recorder.flushes > flushes:  # this alert's write flushed the collection
            flushes, flush_ms = recorder.flushes, [*flush_ms, (time.perf_counter() - t0) * 1e3]
        if n % 500 == 0:
            samples.append(_sample(n))
    home.close()
    return {
        "samples": samples,
        "flushes": flushes,
        "flush_ms_max": round(max(flush_ms, default=0), 1),
    }


def kib_per_alert(samples: list[dict], key: str) -> float:
    """Least-squares slope over the second half of the run, KiB per alert."""
    half = [s for s in samples if s["alerts"] >= samples[-1]["alerts"] / 2]
    x = np.array([s["alerts"] for s in half], float)
    y = np.array([s[key] for s in half], float)
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def run_setting(alerts: int, flush_every: int, arrow_pool: str | None) -> dict:
    from serve.memory_env import ARROW_POOL_ENV, MEMORY_ENV

    env = dict(os.environ, **{k: os.environ.get(k, v) for k, v in MEMORY_ENV.items()})
    env.pop(ARROW_POOL_ENV, None)
    if arrow_pool:
        env[ARROW_POOL_ENV] = arrow_pool
    cmd = [sys.executable, __file__, "--child", str(alerts), str(flush_every)]
    res = json.loads(
        subprocess.run(
            cmd, env=env, check=True, capture_output=True, text=True
        ).stdout.splitlines()[-1]
    )
    res["flush_every"] = None if flush_every == NEVER else flush_every
    res["arrow_pool"] = arrow_pool or "mimalloc"
    res["rss_max_kb"] = max(s["rss_kb"] for s in res["samples"])
    for key in ("rss_kb", "anon_kb", "malloc_in_use_kb", "arrow_kb"):
        res[f"{key[:-3]}_kib_per_alert"] = kib_per_alert(res["samples"], key)
    return res


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]), int(sys.argv[3]))))
        return 0
    from serve.alerts import FLUSH_EVERY
    from serve.memory_env import ARROW_POOL_ENV, hub_process_env

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=16000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    hub_pool = hub_process_env({})[ARROW_POOL_ENV]  # the hub's: "system"
    settings = {
        f"flush every {FLUSH_EVERY}": (FLUSH_EVERY, hub_pool),
        f"flush every {FLUSH_EVERY}, Arrow on mimalloc": (FLUSH_EVERY, None),
        "never flushed": (NEVER, hub_pool),
    }
    runs = {}
    for name, (every, pool) in settings.items():
        print(f"{name}: {args.alerts} alerts ...", flush=True)
        runs[name] = run_setting(args.alerts, every, pool)
    doc = {
        "benchmark": "hub_alert_memory",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "alerts": args.alerts,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    head = ["alerts", *(f"{n}: RSS MiB" for n in runs)]
    print("\n" + "".join(f"{h:>28}" for h in head))
    for i, s in enumerate(next(iter(runs.values()))["samples"]):
        cells = [s["alerts"], *(f"{r['samples'][i]['rss_kb'] / 1024:,.0f}" for r in runs.values())]
        print("".join(f"{c:>28}" for c in cells))
    for name, r in runs.items():
        print(
            f"{name}: RSS {r['rss_kib_per_alert']} KiB/alert, anonymous {r['anon_kib_per_alert']}, "
            f"malloc in use {r['malloc_in_use_kib_per_alert']}, Arrow {r['arrow_kib_per_alert']} "
            f"(second half); largest RSS {r['rss_max_kb'] / 1024:,.0f} MiB; "
            f"{r['flushes']} flushes, longest {r['flush_ms_max']} ms"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
