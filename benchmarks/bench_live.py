"""Live latency under load: N simulated cameras push real video at 5 fps each through the
real server (local Ray Serve on 127.0.0.1, MTCNN + dlib-resnet in the shared FacePool),
first alone, then while an archive search (jobs.archive.search) runs against the same pool.

Each camera is a client that sends every 6th frame of short_hamilton_clip.mp4 (29.97 fps,
so about 5 fps of video) on a fixed 5 Hz schedule, as a JPEG to
``POST /v1/cameras/{id}/frames?wait=true``, without waiting for earlier frames (a camera
does not wait). Lin-Manuel Miranda is on the watch list with ``alert_window_s=0``, so each
pass of the clip raises alerts. Measured on the client, one clock:
- frame-to-result: send -> the answer for that frame (analysed), p50/p99;
- frame-to-alert: send of the frame whose analysis raised an alert -> the alert arriving
  over SSE (``GET /v1/alerts/stream``), p50/p99;
- analysed fps per camera, and the drop rate (frames replaced by a newer one while
  waiting, the server's bounded-latency rule) over frames sent.
The abusive-pusher phase adds one more push camera ("abuser", with its own camera token)
and ``--abuse-threads`` threads, in a process of their own, that push to it without pause,
each alternating a frame just under ``live.max_push_pixels`` (3440 x 2320 PNG, 1.6 MB,
about 0.3 s to decode) with a 6300 x 6330 PNG (4.7 MB, refused 413 from its header), while
the other cameras stream as in the "live only" phase; the ratio of their p99 with / without
the abuser is the per-camera isolation's result (target: 1.5 or less).
The archive phase starts an archive search as an investigator runs one: a long video
(a ground-truth video built from LFW photos, 640x360, as in benchmarks/bench_archive.py)
at the default 2 fps: ``facewatch search`` in its own process, with its own milvus-lite
home, on the server's Ray cluster and FacePool (``--ray-address``), and measures while it
is running; the ratio p99
with / p99 without is the priority lane's result.

Where the two cores go: each phase also records the CPU each process group used over it, in
cores (/proc, benchmarks/procs.py: the FacePool replicas, the LiveHub, the API, Serve's HTTP
proxy, Ray's own processes, and this driver, which runs the cameras' clients), beside the
pool's model time per frame.

Capacity: "live only" is also measured with each camera count of ``--sweep``; the largest
count that holds the target (every camera at its fps, p99 frame-to-result at most 500 ms,
under 1% dropped) is reported.

Run: ``.venv/bin/python benchmarks/bench_live.py [--cameras 8] [--seconds 40] [--sweep 4,6,10]
[--note "what else ran"]`` (about 8 minutes on 2 cores). Prints a table, writes
benchmarks/results/bench_live.json. ``--no-archive`` leaves the archive phase out (a short
check of the abusive-pusher phase); ``--phase-seconds`` is ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from procs import cores_used, cpu_by_process  # benchmarks/: CPU per process group

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIP = DATA / "video" / "short_hamilton_clip.mp4"
PHOTO = DATA / "known" / "lin-manuel-miranda.png"
OUT = ROOT / "benchmarks" / "results" / "bench_live.json"
TOKENS = {"bench-cam": ("camera", "bench-camera-token-0123456789")}
TOKENS |= {"abuser": ("camera", "bench-abuser-token-0123456789")}  # bound to camera "abuser"
TOKENS |= {"bench-op": ("operator", "bench-operator-token-0123456789")}
TOKENS |= {"bench-admin": ("admin", "bench-admin-token-0123456789")}
logger = logging.getLogger("bench_live")


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][1]}"}


def enrol(home: Path) -> None:
    cmd = [sys.executable, "-m", "jobs.cli", "--home", str(home), "watchlist", "add"]
    cmd += ["Lin-Manuel Miranda", str(PHOTO), "--list", "watch"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)


def start_server(home: Path, port: int, cams: list[str], alert_window_s: float = 0.0):
    from serve.app import BuildArgs
    from serve.auth import hash_token
    from serve.local import ServeFile, start_local

    tokens = [{"name": n, "role": r, "sha256": hash_token(t)} for n, (r, t) in TOKENS.items()]
    tokens[0]["cameras"] = cams  # bench-cam pushes for every streaming camera
    live = {"alert_window_s": alert_window_s}
    settings = {"home": str(home), "live": live, "api": {"tokens": tokens}}
    sf = ServeFile("127.0.0.1", port, "facewatch", "/", BuildArgs(settings=settings), {})
    return start_local(sf)


def server_niceness() -> None:
    """Run the clients at the niceness of the server they measure: Ray starts its workers
    (pool replicas, hub, API, proxy) 15 above this process (at most 19). Clients left
    above them take the CPU from the server on a loaded machine (measured under ``nice``:
    clients at 10, the server at 19, model time per frame 117 ms at 4 cameras and 309-2079
    ms beyond). Processes started later (the abusive pusher, the archive search) inherit it."""
    os.nice(max(0, min(19, os.nice(0) + 15) - os.nice(0)))


# -- the cameras -----------------------------------------------------------------------------
class Phase:
    """Everything measured in one phase (several cameras, one SSE subscriber)."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, int], float] = {}  # (camera, i) -> send time
        self.result_ms: list[float] = []
        self.server_ms: list[float] = []  # the hub's own frame-to-result, in each answer
        self.stages_ms: dict[str, list[float]] = {}  # the same by stage (serve/stage_times.py)
        self.status: dict[str, int] = {}
        self.per_camera_analysed: dict[str, int] = {}
        self.alert_trigger: dict[str, float] = {}  # alert id -> send time of its frame
        self.alert_seen: dict[str, float] = {}  # alert id -> SSE arrival


async def camera(client, cam: str, frames: list[bytes], fps: float, stop_at: float, ph: Phase):
    loop = asyncio.get_running_loop()
    tasks, i = [], 0
    start = loop.time()
    while True:
        due = start + i / fps
        if due >= stop_at:
            break
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.ensure_future(push(client, cam, frames[i % len(frames)], ph)))
        i += 1
    await asyncio.gather(*tasks)


async def push(client, cam: str, jpeg: bytes, ph: Phase) -> None:
    t0 = time.perf_counter()
    r = await client.post(
        f"/v1/cameras/{cam}/frames?wait=true",
        content=jpeg,
        headers={**bearer("bench-cam"), "Content-Type": "image/jpeg"},
    )
    t1 = time.perf_counter()
    body = r.json() if r.status_code < 500 else {"status": f"http {r.status_code}"}
    status = body.get("status", f"http {r.status_code}")
    ph.status[status] = ph.status.get(status, 0) + 1
    if status == "analysed":
        ph.result_ms.append((t1 - t0) * 1000)
        if body.get("latency_ms") is not None:
            ph.server_ms.append(float(body["latency_ms"]))
        for stage, ms in (body.get("stages_ms") or {}).items():
            ph.stages_ms.setdefault(stage, []).append(float(ms))
        ph.per_camera_analysed[cam] = ph.per_camera_analysed.get(cam, 0) + 1
        for alert_id in body["alerts"]:
            ph.alert_trigger[alert_id] = t0


def listen_sse(base: str, ph_ref: list, stop: threading.Event, ready: threading.Event):
    """Alert arrivals, timed on the same clock as the pushes."""
    timeout = httpx.Timeout(5.0, read=None)
    url = f"{base}/v1/alerts/stream"
    try:
        with httpx.stream("GET", url, headers=bearer("bench-op"), timeout=timeout) as r:
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    ready.set()
                if stop.is_set():
                    return
                if line.startswith("id:"):
                    ph_ref[0].alert_seen[line[3:].strip()] = time.perf_counter()
    except httpx.HTTPError:
        if not stop.is_set():
            raise


async def run_phase(base: str, cams: list[str], frames, fps: float, seconds: float, ph: Phase):
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        stop_at = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(*(camera(client, c, frames, fps, stop_at, ph) for c in cams))


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarise(ph: Phase, cams: list[str], seconds: float, fps: float) -> dict:
    sent = sum(ph.status.values())
    alerts = [
        (ph.alert_seen[a] - t0) * 1000 for a, t0 in ph.alert_trigger.items() if a in ph.alert_seen
    ]
    fps_each = [ph.per_camera_analysed.get(c, 0) / seconds for c in cams]
    return {
        "cameras": len(cams),
        "target_fps": fps,
        "seconds": seconds,
        "frames_sent": sent,
        "statuses": ph.status,
        "analysed_fps_per_camera_min": round(min(fps_each), 2),
        "analysed_fps_per_camera_mean": round(float(np.mean(fps_each)), 2),
        "drop_rate": round(ph.status.get("dropped", 0) / max(sent, 1), 4),
        "frame_to_result_ms": {"p50": pct(ph.result_ms, 50), "p99": pct(ph.result_ms, 99)},
        # the same frames timed by the hub, from receipt to result: the difference is the
        # HTTP path and the camera clients (niced, on the same cores)
        "hub_frame_to_result_ms": {"p50": pct(ph.server_ms, 50), "p99": pct(ph.server_ms, 99)},
        "frame_to_alert_ms": {"p50": pct(alerts, 50), "p99": pct(alerts, 99), "n": len(alerts)},
        # the hub's time by stage, over the analysed frames of this phase
        "hub_stages_ms": {
            stage: {"p50": pct(v, 50), "p99": pct(v, 99)} for stage, v in ph.stages_ms.items()
        },
    }


def pool_stats(window_s: float = 60.0) -> dict[int, dict]:
    """Per-replica counters of the FacePool (frames per lane, seconds busy in the models),
    and its live timing over the last ``window_s``."""
    from ray import serve as ray_serve

    app = ray_serve.status().applications["facewatch"]
    want = sum(app.deployments["FacePool"].replica_states.values())
    handle = ray_serve.get_deployment_handle("FacePool", app_name="facewatch")
    seen: dict[int, dict] = {}
    # Calls land on one replica each (the less loaded of two picked at random), so a busy
    # replica can be missed for dozens of calls; collect all (a soak window once saw one
    # of two within 60 calls, and booked two windows' work into the next).
    for _ in range(300):
        d = handle.describe.remote(window_s).result()
        seen[d["pid"]] = d
        if len(seen) >= want:
            break
    return seen


def pool_delta(before: dict[int, dict], after: dict[int, dict], seconds: float) -> dict:
    """Model time per frame and pool utilisation over a phase (all replicas together)."""
    keys = ("live_frames", "live_region_frames", "archive_frames", "busy_s", "trims", "trim_s")
    pids = set(before) | set(after)
    last = {p: after.get(p, before.get(p, {})) for p in pids}  # unseen after: no change
    tot = {k: sum(last[p].get(k, 0) - before.get(p, {}).get(k, 0) for p in pids) for k in keys}
    frames = tot["live_frames"] + tot["archive_frames"]
    model_ms = 1000 * tot["busy_s"] / max(frames, 1)
    return {
        "replicas": len(pids),
        "allocators": sorted({str(last[p].get("allocator")) for p in pids}),
        "replicas_seen_after": len(after),
        "live_frames": tot["live_frames"],
        "live_frames_region_searched": tot["live_region_frames"],
        "archive_frames": tot["archive_frames"],
        "model_ms_per_frame": round(model_ms, 1),
        "pool_busy_fraction": round(tot["busy_s"] / (seconds * max(len(pids), 1)), 3),
        "capacity_fps_at_this_cost": round(len(pids) * 1000 / max(model_ms, 1e-9), 1),
        # malloc_trim on the model thread after archive work (serve/pool.py)
        "trims": tot["trims"],
        "trim_ms_total": round(1000 * tot["trim_s"], 1),
        "trim_ms_max_so_far": round(1000 * max(last[p].get("trim_max_s", 0) for p in pids), 1),
    }


def server_timing(base: str, pool: dict[int, dict]) -> dict:
    """Read at the end of a phase: the hub's event-loop lag over the last minute, and per
    pool replica a live frame's time in the replica and its batch's model call over the
    phase (``describe(window_s)``, asked for in ``pool_stats``)."""
    stats = httpx.get(f"{base}/v1/stats", headers=bearer("bench-admin"), timeout=60)
    return {
        "hub_event_loop_lag_ms": stats.json().get("event_loop_lag_ms", {}),
        "pool_live_ms": [d.get("live_ms", {}) for d in pool.values()],
        "pool_slow_calls": [c for d in pool.values() for c in d.get("slow_calls", [])],
    }


# -- the abusive pusher ------------------------------------------------------------------------
def abusive_frames(jpeg: bytes) -> list[bytes]:
    """A PNG just under the default pixel limit (decoded: about 0.3 s each) and one far
    over it (6300 x 6330, as in the hostile probe; refused from its header)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    out = []
    for size in ((3440, 2320), (6300, 6330)):
        buf = io.BytesIO()
        image.resize(size).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


class Abuser:
    """``threads`` threads pushing big frames to camera "abuser" as fast as answers come, in
    a process of their own: an abusive client does not share the GIL of the process that
    times the honest cameras (4 threads sending megabytes in this process delayed its own
    timing loop), so what is measured is the server's isolation, not the client's."""

    def __init__(self, base: str, jpeg: bytes, threads: int):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork of a Ray-connected process
        self._stop, self._out = ctx.Event(), ctx.Queue()
        self._proc = ctx.Process(
            target=abuse, args=(base, jpeg, threads, self._stop, self._out), daemon=True
        )
        self.status: dict[int, int] = {}

    def __enter__(self) -> Abuser:
        self._proc.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.status = self._out.get(timeout=120)
        self._proc.join(30)


def abuse(base: str, jpeg: bytes, threads: int, stop, out) -> None:
    """The abusive pusher's process: ``threads`` threads, answers counted by HTTP status
    (0: the connection failed, as when the server answers before reading a refused body)."""
    frames, status, lock = abusive_frames(jpeg), {}, threading.Lock()
    headers = {**bearer("abuser"), "Content-Type": "image/png"}

    def run() -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            i = 0
            while not stop.is_set():
                body = frames[i % len(frames)]
                i += 1
                try:
                    r = c.post("/v1/cameras/abuser/frames", content=body, headers=headers)
                    code = r.status_code
                except httpx.HTTPError:
                    code = 0
                with lock:
                    status[code] = status.get(code, 0) + 1

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    stop.wait()
    for w in workers:
        w.join(60)
    out.put(dict(status))


# -- the archive job ---------------------------------------------------------------------------
def archive_video(duration_s: float) -> Path:
    """A long 640x360 ground-truth video (built once, then cached like bench_archive's)."""
    from pipelines import groundtruth

    path = Path(tempfile.gettempdir()) / "fw-bench" / f"archive_{int(duration_s)}s_640x360.mp4"
    if not path.is_file():
        print(f"building {path.name} (once) ...", flush=True)
        cast = groundtruth.lfw_cast(DATA / "lfw", watched=4, distractors=8, seed=2)
        plan = groundtruth.schedule(
            cast.appear, cast.distractors, duration_s, seed=2, height=(150, 190)
        )
        groundtruth.render(path.with_suffix(".part.mp4"), plan, duration_s, size=(640, 360))
        path.with_suffix(".part.mp4").rename(path)
    return path


class ArchiveSearch:
    """``facewatch search`` of a long video in its own process, as an investigator runs it,
    on the server's Ray cluster and FacePool (``--ray-address``; the Ray token path is in
    our environment, which the process inherits). In another process its driver work (Ray
    Data's executor, matching, tracking, writes) cannot hold the GIL of the process that
    times the cameras; archive progress is read from the pool's counters."""

    def __init__(self, home: Path, out: Path, fps: float, video: Path, address: str):
        self.cmd = [
            sys.executable, "-m", "jobs.cli", "--home", str(home), "search", str(video),
            "--probe", str(PHOTO), "--fps", str(fps), "--case", "BENCH-1",
            "--reason", "benchmark", "--out", str(out), "--ray-address", address, "--json",
        ]  # fmt: skip
        self.log = out.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 300.0) -> None:
        env = dict(os.environ, FACEWATCH_USER="bench")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                self.cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log
            )
        start = archive_frames(pool_stats())
        deadline = time.monotonic() + timeout_s
        while archive_frames(pool_stats()) <= start:  # wait until it is really searching
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the archive search did not start; see {self.log}")
            time.sleep(1.0)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def archive_frames(stats: dict[int, dict]) -> int:
    return sum(d["archive_frames"] for d in stats.values())


# -- main -------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument(
        "--seconds", "--phase-seconds", type=float, default=40.0, help="measured seconds per phase"
    )
    ap.add_argument("--archive-fps", type=float, default=2.0, help="archive sampling fps")
    ap.add_argument(
        "--archive-video-s", type=float, default=600.0, help="length of the archive video"
    )
    ap.add_argument(
        "--sweep", default="4,6,10", help="also measure live only with these camera counts"
    )
    ap.add_argument("--note", default="", help="what else ran on the machine (kept in the JSON)")
    ap.add_argument("--abuse-threads", type=int, default=4, help="abusive pusher's threads")
    ap.add_argument("--no-archive", action="store_true", help="leave the archive phase out")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)

    from serve.local import free_port, stop_local

    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    live_home, archive_home = work / "live-home", work / "archive-home"
    print(f"enrolling (home {live_home}) ...", flush=True)
    enrol(live_home)
    from pipelines.video import video_jpegs

    frames = video_jpegs(CLIP, every=6)  # what a pushing camera sends
    port = free_port()
    sweep = [int(n) for n in args.sweep.split(",") if n.strip() and int(n) != args.cameras]
    every = [f"cam{i + 1}" for i in range(max([args.cameras, *sweep]))]
    cams = every[: args.cameras]
    t0 = time.perf_counter()
    start_server(live_home, port, every)
    startup_s = time.perf_counter() - t0
    server_niceness()
    print(f"server up in {startup_s:.0f}s on 127.0.0.1:{port}", flush=True)
    base = f"http://127.0.0.1:{port}"
    for c in [*every, "abuser"]:
        r = httpx.post(
            f"{base}/v1/cameras",
            json={"id": c, "url": "push", "fps": args.fps, "list": "watch"},
            headers=bearer("bench-admin"),
            timeout=60,
        )
        r.raise_for_status()
    ph_ref, stop_sse, ready = [Phase()], threading.Event(), threading.Event()
    sse = threading.Thread(target=listen_sse, args=(base, ph_ref, stop_sse, ready), daemon=True)
    sse.start()
    ready.wait(30)
    results: dict = {}
    archive = None
    try:
        print("warm-up 8s ...", flush=True)
        asyncio.run(run_phase(base, cams, frames, args.fps, 8.0, ph_ref[0]))
        for n in sweep:
            print(f"measuring {n} camera(s), live only, for {args.seconds:.0f}s ...", flush=True)
            ph = ph_ref[0] = Phase()
            before, cpu_before = pool_stats(), cpu_by_process()
            asyncio.run(run_phase(base, every[:n], frames, args.fps, args.seconds, ph))
            cpu = cores_used(cpu_before, args.seconds)
            res = summarise(ph, every[:n], args.seconds, args.fps)
            res["cpu_cores"] = cpu
            after = pool_stats(args.seconds)
            res["pool"] = pool_delta(before, after, args.seconds)
            res["server_timing"] = server_timing(base, after)
            res["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
            results[f"live only, {n} camera(s)"] = res
        phases = ["live only", "live + abusive pusher"]
        phases += [] if args.no_archive else ["live + archive"]
        for name in phases:
            abuser = None
            if name == "live + abusive pusher":
                abuser = Abuser(base, frames[0], args.abuse_threads).__enter__()
                time.sleep(2.0)  # the flood is on before the measurement starts
            if name == "live + archive":
                import ray

                video = archive_video(args.archive_video_s)
                address = ray.get_runtime_context().gcs_address
                archive = ArchiveSearch(
                    archive_home, work / "archive-out", args.archive_fps, video, address
                )
                archive.start()
            print(f"measuring '{name}' for {args.seconds:.0f}s ...", flush=True)
            load_before = [round(x, 1) for x in os.getloadavg()]
            ph = ph_ref[0] = Phase()
            before, cpu_before = pool_stats(), cpu_by_process()
            try:
                asyncio.run(run_phase(base, cams, frames, args.fps, args.seconds, ph))
                cpu = cores_used(cpu_before, args.seconds)
            finally:
                if abuser is not None:
                    abuser.__exit__()
            after = pool_stats(args.seconds)
            pool = pool_delta(before, after, args.seconds)
            timing = server_timing(base, after)
            archive_during = pool["archive_frames"]
            still_running = archive.running() if archive else False
            time.sleep(2.0)  # alerts raised by the last frames are still on their way
            results[name] = summarise(ph, cams, args.seconds, args.fps)
            results[name]["load_average_before"] = load_before
            results[name]["cpu_cores"] = cpu
            results[name]["pool"] = pool
            results[name]["server_timing"] = timing
            if abuser is not None:
                results[name]["abuser"] = {
                    "threads": args.abuse_threads,
                    "http_status_counts": {str(k): v for k, v in sorted(abuser.status.items())},
                }
            if archive is not None:
                results[name]["archive_frames_during_phase"] = archive_during
                results[name]["archive_fps_during_phase"] = round(archive_during / args.seconds, 2)
                results[name]["archive_search_ran_throughout"] = still_running
                archive.stop()
    finally:
        if archive is not None:
            archive.stop()
        stop_sse.set()
        stop_local()
    report(results, args, startup_s)
    return 0


def p99_ratio(results: dict, name: str) -> float | None:
    """p99 frame-to-result of phase ``name`` over that of "live only"."""
    base, other = results["live only"], results.get(name)
    if other is None or not (
        base["frame_to_result_ms"]["p99"] and other["frame_to_result_ms"]["p99"]
    ):
        return None
    return round(other["frame_to_result_ms"]["p99"] / base["frame_to_result_ms"]["p99"], 2)


def holds(r: dict, fps: float) -> bool:
    """The live target: every camera analysed at its fps, p99 <= 500 ms, under 1% dropped."""
    return (
        r["analysed_fps_per_camera_min"] >= 0.95 * fps
        and (r["frame_to_result_ms"]["p99"] or 1e9) <= 500
        and r["drop_rate"] < 0.01
    )


def capacity(results: dict, fps: float) -> dict:
    """The largest camera count measured (live only) that holds the target."""
    alone = [r for name, r in results.items() if name.startswith("live only")]
    held = [r["cameras"] for r in alone if holds(r, fps)]
    return {
        "measured": sorted(r["cameras"] for r in alone),
        "held": sorted(held),
        "largest_holding_target": max(held) if held else 0,
    }


def live_settings() -> dict:
    """The live levers in force (conf and FACEWATCH__ overrides), so that runs with other
    settings (an A/B) say which was which."""
    from pipelines.config import load_settings

    settings = load_settings()  # as the server's build_settings reads them
    live, pool = settings.live, settings.pool
    return {
        "detect_every": live.detect_every,
        "frames_at_pool": live.frames_at_pool,
        "decode_max_side": live.decode_max_side,
        "pool_replicas": pool.num_replicas,
        "live_max_batch_size": pool.live_max_batch_size,
    }


def timing_of(r: dict) -> dict:
    return r.get("server_timing", {})


def stage_p99(r: dict, stage: str) -> str:
    return str(r.get("hub_stages_ms", {}).get(stage, {}).get("p99"))


def replica_p99(r: dict, key: str, stat: str = "p99") -> str:
    """The largest replica's p99 (or ``stat``) of a live frame's time in the replica, of a
    model call, or of a full garbage collection."""
    values = [rep.get(key, {}).get(stat) for rep in timing_of(r).get("pool_live_ms", [])]
    values = [v for v in values if v is not None]
    return str(max(values)) if values else "None"


# the process groups of procs.cores_used shown in the table, by a part of their name
CPU_PARTS = [
    ("FacePool replicas", "FacePool"),
    ("LiveHub", "LiveHub"),
    ("Api", ":Api"),
    ("HTTP proxy", "ProxyActor"),
    ("driver + cameras", "driver"),
]


def cores_of(r: dict, part: str) -> str:
    groups = r.get("cpu_cores", {}).get("by_group", {})
    return str(round(sum(c for g, c in groups.items() if part in g), 2))


def report(results: dict, args, startup_s: float) -> None:
    from serve.stage_times import STAGES

    base = results["live only"]
    ratio = p99_ratio(results, "live + archive")
    abuse_ratio = p99_ratio(results, "live + abusive pusher")
    targets = {
        f"{args.cameras}_cameras_at_{args.fps:g}fps": base["analysed_fps_per_camera_min"]
        >= 0.95 * args.fps,
        "p99_result_le_500ms": (base["frame_to_result_ms"]["p99"] or 1e9) <= 500,
        "dropped_lt_1pct": base["drop_rate"] < 0.01,
        "p99_ratio_with_abuser_le_1.5": abuse_ratio is not None and abuse_ratio <= 1.5,
    }
    if not args.no_archive:
        targets["p99_ratio_with_archive_le_1.5"] = ratio is not None and ratio <= 1.5
    doc = {
        "benchmark": "bench_live",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            # the same as the server's Ray workers (server_niceness)
            "niceness_of_the_clients": os.nice(0),
        },
        "args": {k: str(v) for k, v in vars(args).items()},
        "server_startup_s": round(startup_s, 1),
        "note": args.note,
        "capacity": capacity(results, args.fps),
        "live_settings": live_settings(),
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
        "phases": results,
        "p99_ratio_archive_vs_alone": ratio,
        "p99_ratio_abuser_vs_alone": abuse_ratio,
        "targets_met": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    rows = [
        ("cameras x fps", lambda r: f"{r['cameras']} x {r['target_fps']:g}"),
        ("frames sent", lambda r: str(r["frames_sent"])),
        ("analysed fps/camera (min)", lambda r: str(r["analysed_fps_per_camera_min"])),
        ("drop rate", lambda r: f"{r['drop_rate']:.1%}"),
        ("frame->result p50 ms", lambda r: str(r["frame_to_result_ms"]["p50"])),
        ("frame->result p99 ms", lambda r: str(r["frame_to_result_ms"]["p99"])),
        (
            "  timed by the hub p99 ms",
            lambda r: str(r.get("hub_frame_to_result_ms", {}).get("p99")),
        ),
        ("frame->alert p50 ms", lambda r: str(r["frame_to_alert_ms"]["p50"])),
        ("frame->alert p99 ms", lambda r: str(r["frame_to_alert_ms"]["p99"])),
        ("alerts timed", lambda r: str(r["frame_to_alert_ms"]["n"])),
    ]
    rows += [
        ("model ms/frame (pool)", lambda r: str(r["pool"]["model_ms_per_frame"])),
        ("pool capacity fps", lambda r: str(r["pool"]["capacity_fps_at_this_cost"])),
        ("pool busy fraction", lambda r: str(r["pool"]["pool_busy_fraction"])),
    ]
    rows += [
        (f"  stage {stage} p99 ms", functools.partial(stage_p99, stage=stage)) for stage in STAGES
    ]
    rows += [
        ("  in replica p99 ms", functools.partial(replica_p99, key="in_replica")),
        ("  model call p99 ms", functools.partial(replica_p99, key="model")),
        ("  model call max ms", functools.partial(replica_p99, key="model", stat="max")),
        ("  model call CPU p99 ms", functools.partial(replica_p99, key="model_cpu")),
        ("  model call CPU max ms", functools.partial(replica_p99, key="model_cpu", stat="max")),
        ("  gen-2 GC max ms", functools.partial(replica_p99, key="gc", stat="max")),
        (
            "  hub loop lag p99 ms",
            lambda r: str(timing_of(r).get("hub_event_loop_lag_ms", {}).get("p99")),
        ),
    ]
    rows += [("CPU cores used (all)", lambda r: str(r.get("cpu_cores", {}).get("total")))]
    rows += [(f"  {label}", functools.partial(cores_of, part=part)) for label, part in CPU_PARTS]
    names = [n for n in results if n.startswith("live only, ")]
    names += [n for n in ("live only", "live + abusive pusher", "live + archive") if n in results]
    print("\n" + f"{'':28}" + "".join(f"{n.replace('live only, ', ''):>18}" for n in names))
    for label, fn in rows:
        print(f"{label:28}" + "".join(f"{fn(results[n]):>18}" for n in names))
    archived = results.get("live + archive", {}).get("archive_frames_during_phase", 0)
    print(f"{'archive frames analysed':28}{archived:>18} (during the 'live + archive' phase)")
    abused = results["live + abusive pusher"]["abuser"]["http_status_counts"]
    print(f"{'abuser answers (status: n)':28}{json.dumps(abused):>18}")
    print(f"\np99 ratio (abuser / alone): {abuse_ratio}   (archive / alone): {ratio}")
    print(f"targets: {targets}")
    print(f"capacity: {doc['capacity']}   settings: {doc['live_settings']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
