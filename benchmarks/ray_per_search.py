"""What each archive search leaves behind in the live server's Ray processes.

An investigator's ``facewatch search --ray-address`` runs on the live server's Ray cluster
and FacePool: it is a new Ray job, with its own driver process and Ray Data dataset. The
soak (soak_live.py) saw Ray's own daemons grow while facewatch's processes stayed flat; this
benchmark measures how much of that each search leaves, on an otherwise idle server:
- the RSS of every server process (by group, as the soak names them) after each of
  ``--searches`` searches of the short clip, one after another;
- the number of metric series the node's metrics agent exports (Ray's Prometheus endpoint),
  by metric family, after each search: Ray keeps the series of a finished job's processes
  and of every finished dataset.
Per group: KiB per search (least-squares slope over the searches after the first, which
also starts Ray Data's stats actor and the search's code paths), and exported series per
search by family (Ray Data ``ray_data_*``, Ray Serve ``ray_serve_*``, facewatch's own
``ray_facewatch_*``, Ray core the rest).

Prints a table, writes benchmarks/results/ray_per_search.json (``--out``).
Run: ``.venv/bin/python benchmarks/ray_per_search.py --searches 12``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_live as bl  # noqa: E402 - the live benchmark's server and archive search
from soak_live import sample  # noqa: E402 - RSS and descriptors per process group

OUT = bl.ROOT / "benchmarks" / "results" / "ray_per_search.json"
FAMILIES = (("ray_data_", "Ray Data"), ("ray_serve_", "Ray Serve"), ("ray_facewatch_", "facewatch"))


def family(metric: str) -> str:
    return next((name for prefix, name in FAMILIES if metric.startswith(prefix)), "Ray core")


def exported_series(port: int) -> Counter:
    """Series the node's metrics agent exports now, by metric name (histogram buckets,
    sums and counts each count: each is a line Prometheus stores)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=60).text
    return Counter(ln.split("{")[0].split()[0] for ln in text.splitlines() if ln and ln[0] != "#")


def one_search(work: Path, n: int, address: str) -> float:
    s = bl.ArchiveSearch(work / "archive-home", work / f"search-{n}", 2.0, bl.CLIP, address)
    s.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with s.log.open("w") as log:
        done = subprocess.run(s.cmd, cwd=bl.ROOT, env=dict(os.environ, FACEWATCH_USER="bench"),
                              stdout=subprocess.DEVNULL, stderr=log, timeout=600)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"search {n} failed (exit {done.returncode}); see {s.log}")
    return time.monotonic() - started


def run(searches: int, work: Path) -> list[dict]:
    import ray

    address = ray.get_runtime_context().gcs_address
    port = ray._private.worker.global_worker.node.metrics_export_port
    rows = []
    for n in range(searches + 1):  # row 0: before any search
        took = one_search(work, n, address) if n else 0.0
        time.sleep(5.0)  # the metrics agent's next report (Ray reports every few seconds)
        procs, _ = sample()
        rows.append({"searches": n, "search_s": round(took, 1), "series": exported_series(port),
                     "rss_kb": {g: p["rss_kb"] for g, p in procs.items()}})  # fmt: skip
        series = sum(rows[-1]["series"].values())
        print(f"after {n:>2} searches: {series:>6} series exported, search took {took:.0f} s",
              flush=True)  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> dict:
    """KiB and series per search over the searches after the first."""
    after = rows[1:]
    x = np.array([r["searches"] for r in after], float)
    # the server's processes alive throughout; not "driver": this benchmark's own process,
    # which reads the metrics text (megabytes) after each search
    groups = sorted(g for g in after[-1]["rss_kb"]
                    if g != "driver" and all(g in r["rss_kb"] for r in after))  # fmt: skip
    kib = {g: round(float(np.polyfit(x, [r["rss_kb"][g] for r in after], 1)[0]), 1) for g in groups}
    total = [sum(r["series"].values()) for r in after]
    fams: Counter = Counter()
    for metric, n in (after[-1]["series"] - after[0]["series"]).items():
        fams[family(metric)] += n
    span = max(1, after[-1]["searches"] - after[0]["searches"])
    return {
        "rss_kib_per_search": kib,
        "rss_kb_first_last": {g: [after[0]["rss_kb"][g], after[-1]["rss_kb"][g]] for g in groups},
        "series_per_search": round(float(np.polyfit(x, total, 1)[0]), 1),
        "series_per_search_by_family": {k: round(v / span, 1) for k, v in fams.most_common()},
        "series_before_first_last": [sum(rows[0]["series"].values()), total[0], total[-1]],
    }


def table(summary: dict, searches: int) -> str:
    lines = [f"{'process group':<42} {'RSS after 1st':>14} {'after last':>11} {'KiB/search':>11}"]
    for g, kib in sorted(summary["rss_kib_per_search"].items(), key=lambda kv: -kv[1]):
        first, last = summary["rss_kb_first_last"][g]
        lines.append(f"{g:<42} {first / 1024:>11.0f} MB {last / 1024:>8.0f} MB {kib:>11.1f}")
    fams = summary["series_per_search_by_family"]
    lines.append(f"metric series exported: {summary['series_per_search']} more per search "
                 f"({searches} searches); by family: {fams}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--searches", type=int, default=12)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.searches < 3:
        ap.error("--searches: at least 3 (the first is warm-up)")
    logging.basicConfig(level=logging.WARNING)
    from serve.local import free_port, stop_local

    work = Path(tempfile.mkdtemp(prefix="ray-per-search-"))
    bl.enrol(work / "live-home")
    port = free_port()
    bl.start_server(work / "live-home", port, ["cam1"])
    try:
        rows = run(args.searches, work)
    finally:
        stop_local()
    summary = summarise(rows)
    print(table(summary, args.searches))
    result = {"args": {"searches": args.searches},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "summary": summary,
              "steps": [{**r, "series": sum(r["series"].values())} for r in rows]}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
