"""Scaling the pool over nodes: the same archive search on a real multi-node Ray cluster
(jobs/cluster.py: head + N worker nodes on 127.0.0.1 in a private network namespace) with
1 pool node and with 2 pool nodes, one FacePool replica (one torch thread) per pool node.

Measured per run, from inside the cluster's namespace (``--inside``):
- the job's wall time (its summary.json) and the sightings it found (the same on both:
  same recall);
- decode: the summed run time of the decode tasks (``ray.util.state``), and their nodes;
- pool: each replica's busy time (its own counter, FacePool.describe);
- store writes: the time to upsert the job's matches again into its store, measured
  after the job;
- rest: the job's wall time less the pool's share of it (pool busy / replicas): the
  driver's own work, scheduling, and waiting on decode; an upper bound on the driver.

From the per-stage costs it writes a paper model for a 10-node GPU cluster, and says
which stage becomes the wall. Results: benchmarks/results/bench_cluster.json; the docs
table comes from it (docs/gen_tables.py).

Run: ``.venv/bin/python benchmarks/bench_cluster.py`` (needs root or CAP_SYS_ADMIN for
``unshare -n``; about 6 minutes on 2 cores). Anything else running on the machine slows
it: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
VIDEO = "video/archive-colour/video.mp4"
ENROL = "video/archive-colour/enroll"
PEOPLE = 3  # wanted people enrolled (their first photo each)
RESULT = ROOT / "benchmarks" / "results" / "bench_cluster.json"
# the paper model: a GPU replica analyses frames this many times faster than one CPU
# thread does (an assumption, stated in the results, not measured here)
GPU_SPEEDUP = 20.0
PAPER_NODES = 10


def _env(replicas: int) -> dict[str, str]:
    """The search's settings: ``replicas`` replicas of one torch thread, 30 s segments."""
    return {
        "FACEWATCH_USER": "bench",
        "FACEWATCH__POOL__NUM_REPLICAS": str(replicas),
        "FACEWATCH__POOL__NUM_CPUS": "0.9",
        "FACEWATCH__SEARCH__SEGMENT_S": "30",
        # milvus-lite, with every writer (this driver) on the home node
        "FACEWATCH__PLACEMENT__LITE_WRITERS_ON_HOME": "true",
    }


def _cli(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), *args]
    full = {**os.environ, **(env or {})}
    done = subprocess.run(cmd, cwd=ROOT, env=full, capture_output=True, text=True, timeout=1800)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"facewatch {' '.join(args[:2])} failed: {done.stderr[-3000:]}")
    return done


# -- inside the namespace: one run -----------------------------------------------------------
def _replica_stats(app: str) -> list[dict]:
    from ray import serve as ray_serve

    handle = ray_serve.get_deployment_handle("FacePool", app_name=app)
    seen: dict[int, dict] = {}
    for _ in range(40):  # each call reaches one replica; ask until all have answered
        d = handle.describe.remote().result()
        seen[d["pid"]] = d
    return list(seen.values())


def _decode_tasks() -> list[dict]:
    from ray.util.state import list_tasks

    rows = []
    for t in list_tasks(limit=10_000, detail=True, raise_on_missing_output=False):
        if "decode_segment" in (t.name or "") and t.state == "FINISHED":
            start, end = t.start_time_ms or 0, t.end_time_ms or 0
            rows.append({"node_id": t.node_id, "s": max(0, end - start) / 1000})
    return rows


def _store_write_s(home: Path, out: Path) -> tuple[int, float]:
    """Upsert the job's matches once more into its store (same ids, so nothing is added)."""
    from pipelines.config import load_settings
    from pipelines.store import MATCHES, VectorStore
    from pipelines.store_migrate import source_embedder

    settings = load_settings(None, {"home": str(home)})
    vs = VectorStore.open(settings)
    try:
        vs.bind(source_embedder(vs))
        stored = vs.query(MATCHES)
        t0 = time.perf_counter()
        vs.upsert(MATCHES, stored)
        return len(stored), time.perf_counter() - t0
    finally:
        vs.close()


def inside(home: Path, out: Path, replicas: int) -> dict:
    """One run on the cluster this process is in (FACEWATCH_RAY_ADDRESS)."""
    import ray
    from ray import serve as ray_serve

    from jobs.archive import runtime
    from jobs.cluster_status import node_rows, replica_rows
    from pipelines.config import load_settings

    os.environ.update(_env(replicas))
    ray.init(address=os.environ["FACEWATCH_RAY_ADDRESS"], log_to_driver=False)
    settings = load_settings(None, {"home": str(home)})
    with runtime.face_pool(settings, cleanup=False) as app:  # loaded before the clock starts
        runtime.wait_for_pool(app)
        t0 = time.perf_counter()
        args = ["search", str(DATA / VIDEO), "--list", "wanted", "--case", "BENCH"]
        done = _cli(home, *args, "--reason", "benchmark", "--out", str(out), "--json")
        cli_s = time.perf_counter() - t0
        stats = _replica_stats(app)
        placed = replica_rows()
        ray_serve.delete(app)
    summary = json.loads((out / "summary.json").read_text())
    sightings = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    written, write_s = _store_write_s(home, out)
    return {
        "pool_nodes": replicas,
        "cli_wall_s": round(cli_s, 2),
        "job_wall_s": summary["wall_s"],
        "frames": summary["frames"],
        "matches": summary["matches"],
        "sightings": sorted({s["person_name"] for s in sightings}),
        "replicas": [
            {"pid": d["pid"], "busy_s": round(d["busy_s"], 2), "frames": d["archive_frames"]}
            for d in stats
        ],
        "replica_nodes": sorted({r["node_id"] for r in placed if r["deployment"] == "FacePool"}),
        "decode_tasks": _decode_tasks(),
        "workers": [n["node_id"] for n in node_rows() if not n["head"]],
        "store_rewrite": {"rows": written, "s": round(write_s, 3)},
    }


# -- outside: clusters, runs, the model -------------------------------------------------------
def enrol(home: Path) -> list[str]:
    wanted = json.loads((DATA / VIDEO).with_name("truth.json").read_text())["wanted"][:PEOPLE]
    for person in wanted:
        photo = sorted((DATA / ENROL / person).iterdir())[0]
        _cli(home, "watchlist", "add", person, str(photo), "--list", "wanted")
    return wanted


def run_on_cluster(template: Path, work: Path, pool_nodes: int) -> dict:
    import shutil

    from jobs.cluster import ClusterSpec, down, up

    home, out = work / f"home-{pool_nodes}", work / f"out-{pool_nodes}"
    shutil.copytree(template, home)
    where = work / f"cluster-{pool_nodes}"
    handle = up(where, ClusterSpec(workers=pool_nodes, worker_cpus=2))
    try:
        argv = [sys.executable, __file__, "--inside", str(home), str(out), str(pool_nodes)]
        done = handle.run(argv, capture_output=True, text=True, timeout=1800)
    finally:
        down(where)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the run on {pool_nodes} pool node(s) failed: {done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def stages(run: dict) -> dict:
    """Where the time went, in seconds of work (summed over nodes) and per frame."""
    frames = max(1, run["frames"])
    pool = sum(r["busy_s"] for r in run["replicas"])
    decode = sum(t["s"] for t in run["decode_tasks"])
    pool_path = pool / max(1, len(run["replicas"]))  # the pool's share of the wall time
    rest = max(0.0, run["job_wall_s"] - pool_path)  # the driver, scheduling, waits
    store = run["store_rewrite"]["s"]
    return {
        "decode_s": round(decode, 2),
        "pool_s": round(pool, 2),
        "rest_s": round(rest, 2),
        "store_writes_s": round(store, 3),
        "per_frame_ms": {
            "decode": round(1000 * decode / frames, 2),
            "pool": round(1000 * pool / frames, 2),
            "rest": round(1000 * rest / frames, 2),
            "store_writes": round(1000 * store / frames, 3),
        },
    }


def paper_model(one: dict) -> dict:
    """10 GPU pool nodes, from the 1-node run's per-frame costs: frames per second each
    stage can sustain; the smallest is the wall."""
    ms = stages(one)["per_frame_ms"]
    rate = {
        "pool": PAPER_NODES * GPU_SPEEDUP * 1000 / max(ms["pool"], 1e-6),
        "decode": PAPER_NODES * 1000 / max(ms["decode"], 1e-6),  # one decoder per node
        # one driver process whatever the nodes; "rest" bounds its cost from above
        "driver (at most)": 1000 / max(ms["rest"], 1e-6),
        "store_writes": 1000 / max(ms["store_writes"], 1e-6),  # one writer (the driver)
    }
    wall = min(rate, key=rate.get)
    return {
        "nodes": PAPER_NODES,
        "assumed_gpu_speedup_per_replica": GPU_SPEEDUP,
        "frames_per_s": {k: round(v, 1) for k, v in rate.items()},
        "wall": wall,
        "note": (
            "each stage's sustainable rate from the measured per-frame cost; the pool scales "
            "with nodes, the driver and a single store writer do not: the driver's share "
            "moves once the face stage writes matches straight to the Milvus server and the "
            "driver only merges sightings"
        ),
    }


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inside", nargs=3, metavar=("HOME", "OUT", "POOL_NODES"))
    parser.add_argument(
        "--others", default="", help="what else ran on the machine (for the record)"
    )
    parser.add_argument(
        "--recompute", action="store_true", help="derive the numbers again from the JSON's runs"
    )
    args = parser.parse_args()
    if args.recompute:
        old = json.loads(RESULT.read_text())
        write(old["runs"], old["enrolled"], old["machine"], old["others_running"])
        return
    if args.inside:
        home, out, n = args.inside
        print("RESULT " + json.dumps(inside(Path(home), Path(out), int(n))), flush=True)
        return
    before = load_now()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        wanted = enrol(work / "template")
        runs = [run_on_cluster(work / "template", work, n) for n in (1, 2)]
    machine = {"cpus": os.cpu_count(), "load_before": before, "load_after": load_now()}
    write(runs, wanted, machine, args.others)


def write(runs: list[dict], wanted: list[str], machine: dict, others: str) -> None:
    one, two = runs
    speedup = one["job_wall_s"] / two["job_wall_s"]
    result = {
        "video": VIDEO,
        "enrolled": wanted,
        "machine": machine,
        "others_running": others,
        "runs": [{**r, "stages": stages(r)} for r in runs],
        "speedup": round(speedup, 2),
        "efficiency": round(speedup / 2, 2),
        "same_sightings": one["sightings"] == two["sightings"],
        "paper_10_gpu_nodes": paper_model(one),
    }
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup", "efficiency", "same_sightings")}))


if __name__ == "__main__":
    main()
