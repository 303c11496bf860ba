"""Live on the multi-node cluster, for benchmarks/bench_cluster.py ``--live``: the facewatch
app deployed with conf/serve.yaml's placement (FacePool replicas on the pool nodes, LiveHub
and Api on the head), N push cameras at F fps each, measured first alone and then while an
archive search (its decode and face stages on the decode node, its frames in the same
FacePool) runs. It reuses bench_live's cameras, phase summary and archive search, so the
numbers mean what they mean in bench_live.json: frame-to-result p50/p99 on the client's
clock, and the drop fraction (frames replaced by a newer one while waiting).

Runs inside the cluster's network namespace (FACEWATCH_RAY_ADDRESS), as a driver on the
head; the HTTP proxy listens on the namespace's own loopback.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import bench_live  # noqa: E402  (the cameras, the phase summary, the archive search)

PORT = 8000  # the namespace's loopback: nothing else listens there


def deploy(home: Path, cams: list[str], fps: float) -> str:
    """conf/serve.yaml's app on the cluster, with bench_live's tokens and cameras."""
    from ray import serve as ray_serve

    from serve.app import BuildArgs, build_settings, compose
    from serve.auth import hash_token
    from serve.local import read_serve_file

    sf = read_serve_file(ROOT / "conf" / "serve.yaml")
    tokens: list[dict[str, Any]] = [
        {"name": n, "role": r, "sha256": hash_token(t)} for n, (r, t) in bench_live.TOKENS.items()
    ]
    tokens[0]["cameras"] = cams
    overrides = {"home": str(home), "live": {"alert_window_s": 0.0}, "api": {"tokens": tokens}}
    settings = build_settings(BuildArgs(settings=overrides))
    ray_serve.shutdown()  # the scaling run's Serve has no HTTP proxy
    ray_serve.start(http_options={"host": "127.0.0.1", "port": PORT}, proxy_location="HeadOnly")
    ray_serve.run(compose(settings, sf.overrides), name=sf.app_name, route_prefix="/")
    base = f"http://127.0.0.1:{PORT}"
    for cam in cams:
        body = {"id": cam, "url": "push", "fps": fps, "list": "watch"}
        r = httpx.post(f"{base}/v1/cameras", json=body, headers=bench_live.bearer("bench-admin"))
        r.raise_for_status()
    return base


def phase(base: str, cams: list[str], frames, fps: float, seconds: float) -> dict:
    ph = bench_live.Phase()
    before = bench_live.pool_stats()
    asyncio.run(bench_live.run_phase(base, cams, frames, fps, seconds, ph))
    res = bench_live.summarise(ph, cams, seconds, fps)
    res["pool"] = bench_live.pool_delta(before, bench_live.pool_stats(), seconds)
    res["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
    return res


def run(work: Path, cameras: int, fps: float, seconds: float, archive_s: float) -> dict:
    """Both phases on the cluster this process is joined to; returns what they measured."""
    import ray

    from jobs.cluster_status import replica_rows
    from pipelines.video import video_jpegs

    ray.init(address=os.environ["FACEWATCH_RAY_ADDRESS"], log_to_driver=False)
    cams = [f"cam{i + 1}" for i in range(cameras)]
    bench_live.enrol(work / "live-home")
    base = deploy(work / "live-home", cams, fps)
    frames = video_jpegs(bench_live.CLIP, every=6)  # about 5 fps of the 30 fps clip
    asyncio.run(bench_live.run_phase(base, cams, frames, fps, 5.0, bench_live.Phase()))  # warm
    results: dict[str, Any] = {
        "replicas": replica_rows(),
        "live only": phase(base, cams, frames, fps, seconds),
    }
    video = bench_live.archive_video(archive_s)
    address = os.environ["FACEWATCH_RAY_ADDRESS"]
    archive = bench_live.ArchiveSearch(
        work / "archive-home", work / "archive-out", 2.0, video, address
    )
    try:
        archive.start()
        t0 = time.perf_counter()
        results["live + archive"] = phase(base, cams, frames, fps, seconds)
        results["live + archive"]["archive_search_ran_throughout"] = archive.running()
        results["live + archive"]["archive_s_measured"] = round(time.perf_counter() - t0, 1)
    finally:
        archive.stop()
    return results
