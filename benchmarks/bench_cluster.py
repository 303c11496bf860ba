"""Scaling the pool over nodes: the same archive search on a real multi-node Ray cluster
(jobs/cluster.py: head + N worker nodes on 127.0.0.1 in a private network namespace) with
1 pool node and with 2 pool nodes, one FacePool replica (one torch thread) per pool node.

A fair comparison on a small machine: each pool node has 1 logical CPU (its replica takes
0.9), and decoding and the face stage run on a decode node of their own (1 logical CPU,
``placement.workers``) in both runs, so the second pool node adds a replica and nothing
else. Left to themselves, decode tasks would run beside the pool (taking its CPU in the
1-node run, spread over more CPUs in the 2-node run). ``limits`` in the JSON bounds the
speed-up from the runs' own numbers (Amdahl on the pool's share of the 1-node wall; logical
CPUs given to Ray against the machine's cores).

Measured per run, from inside the cluster's namespace (``--inside``):
- the job's wall time (its summary.json), the sightings it found and the ids of its
  matches (the same on both: same recall);
- decode: the summed run time of the decode tasks (``ray.util.state``), and their nodes;
- pool: each replica's busy time (its own counter, FacePool.describe);
- store writes: the time to upsert the job's matches again into its store, measured
  after the job;
- rest: the job's wall time less the pool's share of it (pool busy / replicas): the
  driver's own work, scheduling, and waiting on decode; an upper bound on the driver.

From the per-stage costs it writes a paper model for a 10-node GPU cluster, and says
which stage becomes the wall and what moves it. ``--live`` adds, on the 2-pool-node
cluster, 4 push cameras at 5 fps (benchmarks/cluster_live.py, bench_live's cameras) alone
and while an archive search runs: p50/p99 frame-to-result and the drop fraction.
Results: benchmarks/results/bench_cluster.json; the docs tables come from it
(docs/gen_tables.py).

Run: ``.venv/bin/python benchmarks/bench_cluster.py --live`` (needs root or CAP_SYS_ADMIN
for ``unshare -n``; about 8 minutes on 2 cores). Anything else running on the machine
slows it: the JSON records the load average before and after. A smoke run writes
elsewhere: ``--video video/short_hamilton_clip.mp4 --live --live-seconds 6
--live-archive-s 30 --out /tmp/bench_cluster.json``.
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
DECODE_RESOURCE = "facewatch_decode"
POOL_CPUS = 1  # each pool node: 1 logical CPU, one replica of 0.9 CPU and one torch thread


def _env(replicas: int) -> dict[str, str]:
    """The search's settings: ``replicas`` replicas of one torch thread, 30 s segments."""
    return {
        "FACEWATCH_USER": "bench",
        "FACEWATCH__POOL__NUM_REPLICAS": str(replicas),
        "FACEWATCH__POOL__NUM_CPUS": "0.9",
        "FACEWATCH__SEARCH__SEGMENT_S": "30",
        # milvus-lite, with every writer (this driver) on the home node
        "FACEWATCH__PLACEMENT__LITE_WRITERS_ON_HOME": "true",
        # decode and the face stage on the decode node in every run (see the docstring)
        "FACEWATCH__PLACEMENT__WORKERS": json.dumps({DECODE_RESOURCE: 0.01}),
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


def _store_write_s(home: Path, out: Path) -> tuple[list[str], float]:
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
        return sorted(str(r["id"]) for r in stored), time.perf_counter() - t0
    finally:
        vs.close()


def inside(home: Path, out: Path, replicas: int, video: str = VIDEO) -> dict:
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
        args = ["search", str(DATA / video), "--list", "wanted", "--case", "BENCH"]
        done = _cli(home, *args, "--reason", "benchmark", "--out", str(out), "--json")
        cli_s = time.perf_counter() - t0
        stats = _replica_stats(app)
        placed = replica_rows()
        ray_serve.delete(app)
    summary = json.loads((out / "summary.json").read_text())
    sightings = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    match_ids, write_s = _store_write_s(home, out)
    nodes = node_rows()
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
        "workers": [n["node_id"] for n in nodes if "facewatch_pool" in n["resources"]],
        "decode_nodes": [n["node_id"] for n in nodes if DECODE_RESOURCE in n["resources"]],
        "match_ids": match_ids,
        "store_rewrite": {"rows": len(match_ids), "s": round(write_s, 3)},
    }


# -- outside: clusters, runs, the model -------------------------------------------------------
def enrol(home: Path) -> list[str]:
    wanted = json.loads((DATA / VIDEO).with_name("truth.json").read_text())["wanted"][:PEOPLE]
    for person in wanted:
        photo = sorted((DATA / ENROL / person).iterdir())[0]
        _cli(home, "watchlist", "add", person, str(photo), "--list", "wanted")
    return wanted


def _inside(handle, argv: list[str], what: str) -> dict:
    done = handle.run([sys.executable, *argv], capture_output=True, text=True, timeout=1800)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed: {done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def run_on_cluster(template: Path, work: Path, pool_nodes: int, args) -> tuple[dict, dict | None]:
    """The search on a fresh cluster of ``pool_nodes`` pool nodes; then, with ``--live`` on
    the 2-node cluster, the live phases on the same cluster (one start fewer)."""
    import shutil

    from jobs.cluster import ClusterSpec, down, up

    home, out = work / f"home-{pool_nodes}", work / f"out-{pool_nodes}"
    shutil.copytree(template, home)
    where = work / f"cluster-{pool_nodes}"
    spec = ClusterSpec(workers=pool_nodes, worker_cpus=POOL_CPUS, decode_nodes=1, decode_cpus=1)
    handle = up(where, spec)
    live = None
    try:
        argv = [__file__, "--video", args.video, "--inside", str(home), str(out), str(pool_nodes)]
        run = _inside(handle, argv, f"the run on {pool_nodes} pool node(s)")
        if args.live and pool_nodes == 2:
            argv = [__file__, "--inside-live", str(work / "live"), "--live-cameras"]
            argv += [str(args.live_cameras), "--live-fps", str(args.live_fps)]
            argv += ["--live-seconds", str(args.live_seconds)]
            argv += ["--live-archive-s", str(args.live_archive_s)]
            live = _inside(handle, argv, "the live phases")
    finally:
        down(where)
    return run, live


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
    rate = {k: v for k, v in rate.items() if v < 1e8}  # a stage that cost nothing measurable
    wall = min(rate, key=lambda k: rate[k])
    return {
        "nodes": PAPER_NODES,
        "moves_it": {
            "pool": "more pool nodes or replicas (num_replicas in conf/serve.yaml)",
            "decode": "more decoders (search.decoders) on more decode nodes, or GPU decode",
            "driver (at most)": "the face stage writes matches straight to the Milvus server "
            "and the driver only merges sightings (not built)",
            "store_writes": "a Milvus server (several writers) instead of one milvus-lite writer",
        },
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


LAYOUT = (
    "head: 1 logical CPU (the home: the search driver, the store); a decode node of 1 "
    "logical CPU (decode and the face stage, placement.workers) in both runs; each pool "
    "node: 1 logical CPU and one FacePool replica of 0.9 CPU and one torch thread"
)


def limits(one: dict, two: dict, machine: dict) -> dict:
    """What bounds the 1 -> 2 pool-node speed-up, from the two runs' own numbers: the
    pool's share of the 1-node wall (Amdahl: only that share halves), and whether the
    logical CPUs given to Ray outnumber the machine's cores (then the second replica
    competes with decode and the driver for the same cores, and its frames cost more)."""
    s1, s2 = stages(one), stages(two)
    pool_path = s1["pool_s"] / max(1, len(one["replicas"]))
    share = min(1.0, pool_path / max(one["job_wall_s"], 1e-9))
    logical = 1 + 1 + 2 * POOL_CPUS  # head + decode node + 2 pool nodes
    return {
        "pool_share_of_1_node_wall": round(share, 3),
        "amdahl_max_speedup": round(1 / ((1 - share) + share / 2), 2),
        "logical_cpus_2_nodes": logical,
        "machine_cores": machine.get("cpus"),
        "pool_ms_per_frame": [s1["per_frame_ms"]["pool"], s2["per_frame_ms"]["pool"]],
        "decode_ms_per_frame": [s1["per_frame_ms"]["decode"], s2["per_frame_ms"]["decode"]],
        "rest_s": [s1["rest_s"], s2["rest_s"]],
    }


def load_now() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--inside", nargs=3, metavar=("HOME", "OUT", "POOL_NODES"))
    add("--inside-live", metavar="WORK", help="(inside) the live phases")
    add("--others", default="", help="what else ran on the machine (for the record)")
    add("--recompute", action="store_true", help="derive the numbers again from the JSON's runs")
    add("--video", default=VIDEO, help="archive video under the shared data (smoke: a short one)")
    add(
        "--live",
        action="store_true",
        help="also live on the 2-node cluster, alone and with a search",
    )
    add("--live-cameras", type=int, default=4)
    add("--live-fps", type=float, default=5.0)
    add("--live-seconds", type=float, default=30.0, help="measured seconds per live phase")
    add("--live-archive-s", type=float, default=600.0, help="the live phase's archive video")
    add("--out", type=Path, default=RESULT, help="results JSON (smoke runs: not the committed one)")
    return parser.parse_args()


def main() -> None:
    args = _args()
    if args.recompute:
        old = json.loads(args.out.read_text())
        result = report(old["runs"], old["enrolled"], old["machine"], old["others_running"])
        # the layout the runs had (runs before the decode node recorded none)
        write(args.out, {**result, "layout": old.get("layout"), "live": old.get("live")})
        return
    if args.inside:
        home, out, n = args.inside
        print("RESULT " + json.dumps(inside(Path(home), Path(out), int(n), args.video)), flush=True)
        return
    if args.inside_live:
        from cluster_live import run as run_live

        os.environ.update(_env(2))
        work = Path(args.inside_live)
        live = run_live(
            work, args.live_cameras, args.live_fps, args.live_seconds, args.live_archive_s
        )
        print("RESULT " + json.dumps(live), flush=True)
        return
    before = load_now()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        wanted = enrol(work / "template")
        one = run_on_cluster(work / "template", work, 1, args)[0]
        two, live = run_on_cluster(work / "template", work, 2, args)
    machine = {"cpus": os.cpu_count(), "load_before": before, "load_after": load_now()}
    result = report([one, two], wanted, machine, args.others)
    write(args.out, {**result, "video": args.video, "live": live})


def report(runs: list[dict], wanted: list[str], machine: dict, others: str) -> dict:
    one, two = runs
    speedup = one["job_wall_s"] / two["job_wall_s"]
    return {
        "video": VIDEO,
        "enrolled": wanted,
        "machine": machine,
        "others_running": others,
        "layout": LAYOUT,
        "runs": [{**r, "stages": stages(r)} for r in runs],
        "speedup": round(speedup, 2),
        "efficiency": round(speedup / 2, 2),
        "same_sightings": one["sightings"] == two["sightings"],
        "same_match_ids": None if "match_ids" not in one else one["match_ids"] == two["match_ids"],
        "limits": limits(one, two, machine),
        "paper_10_gpu_nodes": paper_model(one),
    }


def write(path: Path, result: dict) -> None:
    path.write_text(json.dumps(result, indent=1) + "\n")
    keys = ("speedup", "efficiency", "same_sightings", "same_match_ids")
    print(json.dumps({k: result.get(k) for k in keys}))


if __name__ == "__main__":
    main()
