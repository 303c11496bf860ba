"""Bulk enrolment speed: ``facewatch watchlist import`` of a 10,000-photo manifest.

The manifest is built from the shared face data: every LFW photo (6,157, one person per
LFW name) and every CelebA photo (1,191, one person per identity), copied into --work
beside the CSV (an import only reads photos inside the CSV's folder). That is 7,348
DISTINCT photos; to reach --photos, LFW photos are REPEATED, each under a new person_ref
(a person of one photo). A repeated photo is embedded once per import (photos are keyed
by content hash), so the results give both rates: manifest photos per second, and
distinct photos embedded per second.

It runs the import as the CLI does (``jobs.archive.watchlist_import.BulkImport``: a local Ray, the
FacePool, Ray Data), then runs it again: the rerun must add nothing. Results:
``benchmarks/results/bench_import.json``.

    .venv/bin/python benchmarks/bench_import.py                  # 10,000 photos
    .venv/bin/python benchmarks/bench_import.py --photos 500     # a quick look
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
HEADER = ("person_ref", "name", "photo", "category", "reason", "expires", "authorised_by", "source")


def build_manifest(work: Path, photos: int) -> dict:
    """The CSV and its photos under ``work``; how many are distinct and how many repeated."""
    rows = []
    for folder, ref in (("lfw", "LFW"), ("celeba", "CELEBA")):
        for person in sorted(p for p in (DATA / folder).iterdir() if p.is_dir()):
            for img in sorted(person.glob("*.jpg")):
                rows.append(
                    (f"{ref}-{person.name}", person.name, f"{folder}/{person.name}/{img.name}")
                )
    distinct = len(rows)
    lfw = [r for r in rows if r[0].startswith("LFW-")]
    for i in range(max(0, photos - distinct)):  # not enough distinct photos: repeat LFW ones
        _, name, photo = lfw[i % len(lfw)]
        rows.append((f"REPEAT-{i}", f"{name} (repeat {i})", photo))
    rows = rows[:photos]
    for _, _, photo in rows:
        dst = work / "photos" / photo
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DATA / photo, dst)
    path = work / "manifest.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for ref, name, photo in rows:
            w.writerow([ref, name, f"photos/{photo}", "other", "", "", "bench", "shared data"])
    return {
        "path": path,
        "photos": len(rows),
        "distinct_photos": len({r[2] for r in rows}),
        "repeated_photos": len(rows) - len({r[2] for r in rows}),
        "people": len({r[0] for r in rows}),
    }


def run_import(home: Path, manifest: Path, people: int) -> tuple[dict, dict]:
    """The import, then its rerun: their counts (with times)."""
    from jobs.archive import runtime
    from jobs.archive.watchlist_import import BulkImport
    from pipelines.catalog import today
    from pipelines.config import Settings
    from pipelines.engine import FaceEngine
    from pipelines.home import Home
    from pipelines.watchlist import Watchlists

    runtime.prepare_env(local=True)
    settings = Settings(home=home)
    engine = FaceEngine(settings, device="cpu")
    h = Home.open(settings, engine.info)
    lists = Watchlists(h, engine.info, engine.embedder.default_threshold)
    lists.set_policy("bench", "bench", size_cap=max(people, 1))
    times = {}

    @contextmanager
    def pool():
        t0 = time.perf_counter()
        runtime.start_ray(None, settings)
        with runtime.face_pool(settings, engine.info, cleanup=False) as app:
            runtime.wait_for_pool(app)
            times["ray_and_pool_start_s"] = round(time.perf_counter() - t0, 1)
            yield app

    def progress(done: int, total: int) -> None:
        if done % 500 < 32 or done == total:
            print(f"  {done}/{total} distinct photos", flush=True)

    try:
        job = BulkImport(h, lists, "bench", "bench", "bench_import")
        first = job.run(manifest, pool, settings, today(), progress).counts()
        first.update(times)
        second = job.run(manifest, pool, settings, today()).counts()
    finally:
        h.close()
    return first, second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=10_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/fw-bench-import"))
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_import.json")
    args = ap.parse_args()
    shutil.rmtree(args.work / "home", ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(args.work, args.photos)
    print(f"manifest: {manifest}", flush=True)
    load_before = os.getloadavg()
    first, second = run_import(args.work / "home", manifest.pop("path"), manifest["people"])
    enrol_s = first["wall_s"] - first["pool_s"] - first.get("ray_and_pool_start_s", 0)
    res = {
        "manifest": manifest,
        "import": first,
        "rerun": second,
        "manifest_photos_per_s": round(manifest["photos"] / first["wall_s"], 1),
        "manifest_photos_per_s_after_start": round(
            manifest["photos"] / (first["wall_s"] - first.get("ray_and_pool_start_s", 0)), 1
        ),
        "distinct_photos_per_s_in_pool": round(first["photos_processed"] / first["pool_s"], 1),
        "enrol_s": round(enrol_s, 1),
        "rerun_added_nothing": second["people_added"] == second["people_extended"] == 0
        and second["photos_enrolled"] == 0,
        "target_photos_per_s": 20.0,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "other_processes": _others(),
        },
        "synthetic": "no: real photos; photos beyond the distinct ones are repeats",
    }
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


def _others() -> str:
    """What else was busy on the machine when the run ended (the CPU is shared)."""
    out = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[1:8]
    return "; ".join(" ".join(line.split()) for line in out)


if __name__ == "__main__":
    main()
